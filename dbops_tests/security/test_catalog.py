"""The catalog of controls: at least 60 rules, each mapped to OWASP Top 10:2025 and 2021, each with a planted flaw the
weakened cluster expects (or, for the rules of a target without a matrix, the test that plants it), and documented."""

from __future__ import annotations

from dbops.security import controls_doc  # imports every rules module, which registers its controls
from dbops.security.catalog import CONTROLS, OWASP_2021, OWASP_2025
from dbops_tests.conftest import PROJECT_DIR
from dbops_tests.security import flaws

# Rules about a target without an access-control matrix (the weakened cluster has one): planted in
# test_team_databases.py (the grants baseline recorded, then each kind of change reported), and the backup rules
# test_audit.py plants on stores of their own.
PLANTED_ELSEWHERE = {"SEC040": "test_team_databases", "SEC041": "test_team_databases",
                     "SEC042": "test_team_databases", "SEC043": "test_team_databases",
                     "SEC044": "test_team_databases", "SEC045": "test_team_databases",
                     "SEC046": "test_team_databases", "SEC030": "test_audit",
                     "SEC034": "../backup/test_store_trust", "SEC007": "test_audit", "SEC021": "test_team_databases",
                     # pgaudit's settings, judged once it is loaded (the weakened cluster does not preload it)
                     "SEC104": "test_sensitive", "SEC105": "test_sensitive", "SEC106": "test_sensitive",
                     "SEC107": "test_sensitive"}


def test_at_least_sixty_controls_each_mapped_to_both_owasp_lists() -> None:
    assert len(CONTROLS) >= 60, len(CONTROLS)
    for control in CONTROLS.values():
        assert control.owasp in OWASP_2025 and control.owasp_2021 in OWASP_2021, control
        assert control.title and control.rule.startswith("SEC"), control


def test_every_control_has_a_planted_flaw() -> None:
    planted = {rule for rule, _subject in flaws.expected()}
    missing = sorted(set(CONTROLS) - planted - set(PLANTED_ELSEWHERE))
    assert missing == [], f"controls with no planted flaw: {missing}"
    assert set(PLANTED_ELSEWHERE) <= set(CONTROLS)
    for rule, test in PLANTED_ELSEWHERE.items():
        assert rule in (PROJECT_DIR / "dbops_tests" / "security" / f"{test}.py").read_text(), (rule, test)


def test_docs_list_every_control_with_its_categories() -> None:
    doc = (PROJECT_DIR / "docs" / "security.md").read_text()
    assert controls_doc.render(doc) == doc, "stale: run python -m dbops.security.controls_doc"
    for control in CONTROLS.values():
        row = f"| {control.rule} | {control.title} | {control.owasp} | {control.owasp_2021} | {control.cis or '-'} |"
        assert row in doc, row
