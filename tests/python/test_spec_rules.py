"""The service decides the shared spec cases (tests/fixtures/spec_cases.json) as the host
does (src/spec/rules.rs): both read python/cerebros_service/nas/spec_rules.json."""

import json
from pathlib import Path

import pytest

from cerebros_service._dispatch import OpError
from cerebros_service.nas.rules import check_section

CASES = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "spec_cases.json").read_text()
)["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['section']}-{json.dumps(c['value'])}")
def test_the_service_decides_each_shared_case_as_the_host(case):
    section = case["section"]
    if case["error"] is None:
        check_section(section, case["value"], section)
        return
    with pytest.raises(OpError) as caught:
        check_section(section, case["value"], section)
    assert caught.value.error_class == "contract"
    assert caught.value.details["key"] == case["error"]
