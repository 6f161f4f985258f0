"""Who counts for which group of an approval policy: distinct people, each once, matched so the policy is met
whenever it can be."""

from __future__ import annotations

from airflow_deploy_provider.sensors.approval import covered

LEAD = {"name": "tech-lead", "members": ["carol", "dave"]}
PRODUCT = {"name": "product", "members": ["erin", "dave"]}


def test_a_person_in_two_groups_counts_for_the_group_that_completes_the_policy():
    # dave is in both groups: approving first, he must not take tech-lead's seat from carol... nor block erin
    assert covered([LEAD, PRODUCT], ["dave", "carol"]) == {"tech-lead": ["carol"], "product": ["dave"]}
    assert covered([LEAD, PRODUCT], ["dave", "erin"]) == {"tech-lead": ["dave"], "product": ["erin"]}


def test_a_person_counts_once():
    assert covered([LEAD, PRODUCT], ["dave", "dave"]) in ({"tech-lead": ["dave"], "product": []},
                                                          {"tech-lead": [], "product": ["dave"]})


def test_required_and_open_groups():
    two = {"name": "reviewers", "members": [], "required": 2}
    assert covered([two], ["x"]) == {"reviewers": ["x"]}
    assert sorted(covered([two], ["x", "y", "z"])["reviewers"]) == ["x", "y"]
    assert covered([LEAD], ["mallory"]) == {"tech-lead": []}  # not a member
    assert covered([{"name": "lead", "members": ["Carol"]}], ["carol"]) == {"lead": ["carol"]}  # user names: any case
