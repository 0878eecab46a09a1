import pytest
import results_factory as rf

from bench.problem import Problem
from bench.results import ResultsError, case_key, device_name, load_results, samples


def test_a_results_file_loads(tmp_path):
    p = Problem(batch=4, dim=8, steps=10)
    path = rf.write(tmp_path / "r.json", rf.results([rf.entry("analytic", p, [1.0, 1.1, 0.9])]))
    data = load_results(path)
    (b,) = data["benchmarks"]
    assert case_key(b) == ("analytic", p.name, "float32", "cpu")
    assert samples(b) == [1.0, 1.1, 0.9]
    assert device_name(data) == "Test CPU"


@pytest.mark.parametrize("name", rf.BAD_FILES)
def test_bad_files_get_one_line_naming_the_file(tmp_path, name):
    path, words = rf.write_bad(tmp_path, name)
    with pytest.raises(ResultsError) as info:
        load_results(path)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message
