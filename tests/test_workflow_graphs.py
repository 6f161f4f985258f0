"""Each generated DAG follows the spec's workflow: phases as task groups, in the spec's order."""

from __future__ import annotations

import pytest

from airflow_deploy_provider.config.loader import load_service
from airflow_deploy_provider.factory import build_service_dags
from tests.conftest import SERVICES

FAILURE_RULES = {"one_failed", "all_failed"}


@pytest.fixture(scope="module")
def checkout_dags():
    return build_service_dags(load_service(SERVICES / "checkout" / ".deploy").config)


@pytest.fixture(scope="module")
def hello_dags():
    return build_service_dags(load_service(SERVICES / "hello" / ".deploy").config)


def rule(task) -> str:
    return str(getattr(task.trigger_rule, "value", task.trigger_rule))


def main_tasks(dag):
    return [t for t in dag.tasks if rule(t) not in FAILURE_RULES and not t.is_teardown]


def ancestors(dag, task_id: str) -> set[str]:
    seen, todo = set(), [task_id]
    while todo:
        for up in dag.task_dict[todo.pop()].upstream_task_ids:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


def phase(task_id: str) -> str:
    return task_id.split(".")[0] if "." in task_id else task_id


def assert_phases_in_order(dag, expected: list[str]):
    """Every task of a phase runs after every main-path task of the phases before it."""
    phases: dict[str, list[str]] = {}
    for t in main_tasks(dag):
        phases.setdefault(phase(t.task_id), []).append(t.task_id)
    assert [p for p in expected if p in phases] == expected, f"phases present: {sorted(phases)}"
    for i, later in enumerate(expected):
        for earlier in expected[:i]:
            for task_id in phases[later]:
                missing = set(phases[earlier]) - ancestors(dag, task_id)
                assert not missing, f"{task_id} does not wait for {sorted(missing)}"


def chain_of(dag, ids: list[str]):
    for up, down in zip(ids, ids[1:]):
        assert up in ancestors(dag, down), f"{up} must run before {down}"


def test_development_workflow(checkout_dags):
    dag = checkout_dags["deploy_checkout_development"]
    assert_phases_in_order(dag, ["code_push", "build", "security_scan", "deploy_to_dev", "smoke_tests",
                                 "notification"])
    chain_of(dag, ["build.run_unit_tests", "build.build_image", "build.push_image"])
    scans = {"security_scan.scan_cves", "security_scan.scan_secrets", "security_scan.generate_sbom"}
    assert scans <= set(dag.task_dict)
    assert not any(s in ancestors(dag, o) for s in scans for o in scans)  # in parallel
    chain_of(dag, ["deploy_to_dev.run_migrations", "deploy_to_dev.deploy_version", "deploy_to_dev.wait_until_ready"])
    assert dag.task_dict["deploy_to_dev.deploy_version"].strategy == "recreate"
    chain_of(dag, ["smoke_tests.health_check", "smoke_tests.functional_tests"])
    assert "smoke_tests.validate_logs" in dag.task_dict
    failure = dag.task_dict["notification.notify_failure"]
    assert rule(failure) == "one_failed"
    # the success and failure notifications are both leaves, so a failure also fails the run
    assert {t.task_id for t in dag.leaves} >= {"notification.notify_success", "notification.notify_failure"}
    assert set(dag.params) >= {"commit", "version", "branch", "author", "message", "reason"}


def test_staging_workflow(checkout_dags):
    dag = checkout_dags["deploy_checkout_staging"]
    assert_phases_in_order(dag, ["start_deployment", "manual_approval", "pre_deployment_validation",
                                 "build_promotion", "infrastructure_update", "blue_green_deployment",
                                 "monitoring_setup", "notification_and_documentation"])
    chain_of(dag, ["manual_approval.verify_development_passed", "manual_approval.approve"])
    chain_of(dag, ["build_promotion.retag_image", "build_promotion.sign_image", "build_promotion.push_image"])
    chain_of(dag, ["blue_green_deployment.deploy_green", "blue_green_deployment.wait_green_ready",
                   "blue_green_deployment.integration_tests_on_green", "blue_green_deployment.smoke_tests_on_green",
                   "blue_green_deployment.switch_traffic", "blue_green_deployment.watch_after_switch",
                   "blue_green_deployment.retire_blue"])
    watch = dag.task_dict["blue_green_deployment.watch_after_switch"]
    assert watch.duration == 300 and watch.rollback_on_failure  # trafficSwitch.testDuration, rollbackOnError
    back = dag.task_dict["blue_green_deployment.switch_back_to_blue"]
    assert rule(back) == "one_failed" and "blue_green_deployment.watch_after_switch" in back.upstream_task_ids
    # postDeploymentTests in the configured order, on the switched traffic, before blue is retired: a failed
    # suite switches back to blue
    chain_of(dag, ["blue_green_deployment.watch_after_switch", "post_deployment_testing.integration_tests",
                   "post_deployment_testing.smoke_tests", "post_deployment_testing.load_tests",
                   "blue_green_deployment.retire_blue"])
    assert "post_deployment_testing.load_tests" in back.upstream_task_ids
    assert "blue_green_deployment.retire_blue" in ancestors(dag, "monitoring_setup.configure_alerts")
    assert {"monitoring_setup.configure_alerts", "monitoring_setup.setup_dashboards",
            "monitoring_setup.enable_tracing"} <= set(dag.task_dict)
    approve = dag.task_dict["manual_approval.approve"]
    assert approve.policies["default"]["groups"][0]["members"] == ["alice", "bob", "carol"]


def test_production_workflow(checkout_dags):
    dag = checkout_dags["deploy_checkout_production_us-east-1"]
    assert_phases_in_order(dag, ["start_deployment", "approval_gate", "pre_deployment_actions",
                                 "canary_deployment", "post_deployment_validation", "monitoring_and_alerting",
                                 "communication", "post_deployment_tasks"])
    chain_of(dag, ["pre_deployment_actions.scale_up", "pre_deployment_actions.snapshot_current_state",
                   "pre_deployment_actions.disable_autoscaling", "pre_deployment_actions.set_deployment_start_marker"])
    steps = ["canary_deployment.step_1_5pct", "canary_deployment.step_2_25pct", "canary_deployment.step_3_50pct",
             "canary_deployment.step_4_100pct"]
    chain_of(dag, ["canary_deployment.run_migrations", "canary_deployment.deploy_canary",
                   "canary_deployment.wait_canary_ready", *steps, "canary_deployment.terminate_old_version",
                   "canary_deployment.update_load_balancer"])
    # the canary phases exactly as configured
    assert [(dag.task_dict[s].weight, dag.task_dict[s].duration) for s in steps] == [
        (5, 600), (25, 600), (50, 900), (100, 0)]
    gate = dag.task_dict[steps[0]]
    assert gate.interval == 60 and gate.failure_limit == 5
    assert [(m["name"], m["max"]) for m in gate.metrics] == [("error_rate", 0.1), ("latency_p99", 500.0)]
    assert [(c["metric"], c["op"], c["threshold"]) for c in gate.conditions] == [
        ("error_rate", ">", 1.0), ("latency_p99", ">", 1000.0), ("availability", "<", 99.9)]
    rollback = dag.task_dict["canary_deployment.rollback"]
    assert rule(rollback) == "one_failed" and set(steps) <= rollback.upstream_task_ids
    # autoscaling is disabled as a setup and re-enabled as its teardown, which runs even after a failure
    reenable = dag.task_dict["post_deployment_tasks.reenable_autoscaling"]
    assert reenable.is_teardown and "pre_deployment_actions.disable_autoscaling" in reenable.upstream_task_ids
    watch = dag.task_dict["monitoring_and_alerting.watch_metrics"]
    assert watch.duration == 30 * 60 and not watch.rollback_on_failure
    restore = dag.task_dict["monitoring_and_alerting.restore_previous_version"]
    assert rule(restore) == "one_failed" and restore.upstream_task_ids == {"monitoring_and_alerting.watch_metrics"}
    validation = {t for t in dag.task_dict if t.startswith("post_deployment_validation.")}
    assert validation == {"post_deployment_validation." + n for n in (
        "health_check", "run_synthetic_transactions", "verify_database_connectivity", "check_external_integrations",
        "validate_caching_layers", "test_critical_user_flows")}
    assert dag.task_dict["canary_deployment.run_migrations"].backup is True


def test_single_region_production_has_the_checklist(hello_dags):
    dag = hello_dags["deploy_hello_production"]
    assert_phases_in_order(dag, ["start_deployment", "pre_deployment_checklist", "approval_gate",
                                 "pre_deployment_actions", "canary_deployment", "post_deployment_validation",
                                 "monitoring_and_alerting", "communication", "post_deployment_tasks"])
    items = {t.split(".")[1] for t in dag.task_dict if t.startswith("pre_deployment_checklist.")}
    # no maintenance window and no migrations configured: those two items do not apply
    assert items == {"staging_tests_passed", "security_scan_clean", "release_notes_prepared",
                     "rollback_plan_documented", "on_call_team_notified", "checklist_report"}
    report = dag.task_dict["pre_deployment_checklist.checklist_report"]
    assert report.upstream_task_ids == {f"pre_deployment_checklist.{i}" for i in items - {"checklist_report"}}
    assert report.items == ["staging_tests_passed", "security_scan_clean", "release_notes", "rollback_plan",
                            "on_call_notified"]
    assert dag.task_dict["canary_deployment.step_1_10pct"].weight == 10


def test_checklist_of_the_full_example(checkout_dags):
    dag = checkout_dags["deploy_checkout_production"]
    items = {t.split(".")[1] for t in dag.task_dict if t.startswith("pre_deployment_checklist.")}
    # the example signs its images (steps.sign-image): production refuses an unsigned one
    assert items == {"staging_tests_passed", "security_scan_clean", "release_notes_prepared",
                     "rollback_plan_documented", "on_call_team_notified", "maintenance_window_scheduled",
                     "database_backup_completed", "verify_image_signature", "checklist_report"}
    assert dag.task_dict["pre_deployment_checklist.security_scan_clean"].settings == {
        "scan_steps": ["scan-cves", "scan-secrets"]}
    assert dag.task_dict["pre_deployment_checklist.verify_image_signature"].platform_type == "kubernetes"
    chain_of(dag, ["approval_gate.approve", "approval_gate.verify_maintenance_window",
                   "approval_gate.confirm_rollback_readiness"])
    # what is left of the window must hold the rest of the run: everything after the check, not before it
    from airflow_deploy_provider.factory.plan import plan_dag

    plan = plan_dag(dag)
    window = dag.task_dict["approval_gate.verify_maintenance_window"]
    assert window.expected_rollout == plan.after(window.task_id)
    path = plan.critical_path
    assert window.task_id in path  # on the critical path: what comes before it plus what is left is the whole run
    done = sum((plan.by_id[t].expected for t in path[:path.index(window.task_id) + 1]), start=plan.expected * 0)
    assert done > plan.expected * 0 and window.expected_rollout == plan.expected - done


def test_multi_region_rollout(checkout_dags):
    dag = checkout_dags["deploy_checkout_production"]
    order = ["us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"]
    deploys = [f"regional_rollout.region_{i}_{r.replace('-', '_')}.deploy" for i, r in enumerate(order, 1)]
    chain_of(dag, ["approval_gate.confirm_rollback_readiness", *deploys, "communication.update_deployment_log"])
    for task_id, region in zip(deploys, order):
        assert dag.task_dict[task_id].trigger_dag_id == f"deploy_checkout_production_{region}"
    observe = dag.task_dict["regional_rollout.region_1_us_west_2.observe"]
    assert observe.duration == 30 * 60 and observe.region == "us-west-2"
    # stopOnRegionFailure: each next region needs the previous one to succeed
    assert all(rule(dag.task_dict[t]) == "all_success" for t in deploys)
    rollback = dag.task_dict["regional_rollout.region_2_eu_west_1.rollback_region"]
    assert rollback.trigger_dag_id == "rollback_checkout_production_eu-west-1"


def test_multi_region_failure_handling():
    dag = build_service_dags(load_service(SERVICES / "payments" / ".deploy").config)["deploy_payments_production"]
    # A failed region: a branch on its ledger row (not the trigger rule, which upstream_failed also sets off)
    # chooses its rollback and the move of its DNS weight.
    group = "regional_rollout.region_2_eu_west_1"
    decide = dag.task_dict[f"{group}.if_region_failed"]
    assert rule(decide) == "one_failed" and decide.region == "eu-west-1"
    assert set(decide.upstream_task_ids) == {f"{group}.deploy", f"{group}.observe", f"{group}.shift_dns_weight"}
    assert set(decide.downstream_task_ids) == {f"{group}.rollback_region", f"{group}.move_dns_weight"}
    rollback = dag.task_dict[f"{group}.rollback_region"]
    assert rollback.trigger_dag_id == "rollback_payments_production_eu-west-1" and rule(rollback) == "all_success"
    assert dag.task_dict[f"{group}.move_dns_weight"].drain == ["eu-west-1"]
    # stopOnRegionFailure: the next region needs this region's main path only
    assert dag.task_dict["regional_rollout.region_3_ap_southeast_1.deploy"].upstream_task_ids == {
        f"{group}.shift_dns_weight"}
    # The verdict waits for every region, failure handling included, and leads to the outcome or the failure.
    verdict = dag.task_dict["outcome.all_regions_succeeded"]
    assert rule(verdict) == "all_done"
    assert {f"{group}.rollback_region", f"{group}.move_dns_weight"} <= verdict.upstream_task_ids
    assert {"communication.update_deployment_log", "handle_failure"} <= verdict.downstream_task_ids


def test_hotfix_workflow(checkout_dags):
    # checkout is multi-region: the global hotfix holds the approval, the build and the post-hotfix actions; each
    # region's hotfix DAG the expedited deployment and the close monitoring.
    dag = checkout_dags["hotfix_checkout"]
    assert_phases_in_order(dag, ["start_deployment", "hotfix_creation", "emergency_build", "expedited_deployment",
                                 "outcome", "post_hotfix_actions"])
    approve = dag.task_dict["hotfix_creation.fast_track_approval"]
    assert set(approve.policies) == {"critical", "major"}
    assert dag.task_dict["start_deployment"].tag_template == "hotfix-{issue_id}"
    assert {"post_hotfix_actions.deploy_to_development", "post_hotfix_actions.deploy_to_staging"} <= set(dag.task_dict)
    assert dag.params.get_param("severity").schema["enum"] == ["critical", "major"]
    # the canary region first, then every other region at once
    runs = {r: dag.task_dict[f"expedited_deployment.region_{r.replace('-', '_')}.hotfix"]
            for r in ("us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1")}
    assert runs["us-west-2"].trigger_dag_id == "hotfix_checkout_us-west-2"
    assert not runs["us-west-2"].upstream_task_ids & {r.task_id for r in runs.values()}
    for region in ("eu-west-1", "ap-southeast-1", "us-east-1"):
        assert runs[region].upstream_task_ids == {runs["us-west-2"].task_id}
    assert rule(dag.task_dict["outcome.all_regions_hotfixed"]) == "all_done"

    regional = checkout_dags["hotfix_checkout_eu-west-1"]
    assert_phases_in_order(regional, ["start_deployment", "expedited_deployment", "monitor_closely"])
    assert not any(t.startswith(("hotfix_creation", "emergency_build", "post_hotfix")) for t in regional.task_dict)
    chain_of(regional, ["expedited_deployment.record_emergency_override", "expedited_deployment.deploy_to_one_replica",
                        "expedited_deployment.wait_one_replica_ready", "expedited_deployment.validate_one_replica",
                        "expedited_deployment.deploy_to_all"])
    validate = regional.task_dict["expedited_deployment.validate_one_replica"]
    assert validate.duration == 300 and validate.weight == 10  # one of ten replicas, stable for 5 minutes
    assert regional.task_dict["expedited_deployment.deploy_to_one_replica"].replicas == 1
    assert regional.task_dict["monitor_closely.watch_metrics"].duration == 30 * 60
    assert regional.task_dict["start_deployment"].tag_template == "hotfix-{issue_id}"


def test_single_region_hotfix_workflow(hello_dags):
    dag = hello_dags["hotfix_hello"]
    assert_phases_in_order(dag, ["start_deployment", "hotfix_creation", "expedited_deployment", "monitor_closely",
                                 "post_hotfix_actions"])  # hello has no build steps
    chain_of(dag, ["expedited_deployment.deploy_to_all", "expedited_deployment.wait_all_ready"])


def test_rollback_workflow(checkout_dags):
    dag = checkout_dags["rollback_checkout_production_us-west-2"]
    assert_phases_in_order(dag, ["rollback_decision", "execute_rollback", "database_rollback", "validation",
                                 "post_rollback"])
    chain_of(dag, ["execute_rollback.identify_stable_version", "execute_rollback.switch_to_stable_version",
                   "execute_rollback.verify_healthy", "execute_rollback.update_load_balancer"])
    chain_of(dag, ["database_rollback.check_schema_changes", "database_rollback.run_down_migrations"])
    assert dag.task_dict["database_rollback.run_down_migrations"].direction == "down"
    assert dag.task_dict["validation.verify_error_rate"].duration == 15 * 60  # "monitor for 15 minutes"
    assert dag.params.get_param("trigger").schema["enum"] == ["manual", "alert"]


def test_multi_region_rollback_rolls_every_region_back_at_once(checkout_dags):
    dag = checkout_dags["rollback_checkout_production"]
    assert_phases_in_order(dag, ["rollback_decision", "regional_rollbacks", "outcome", "post_rollback"])
    start = dag.task_dict["rollback_decision.record_decision"]
    assert start.across_regions and start.kind == "rollback"
    runs = [dag.task_dict[f"regional_rollbacks.rollback_{r}"] for r in ("us_west_2", "eu_west_1", "ap_southeast_1",
                                                                         "us_east_1")]
    for run in runs:
        assert run.upstream_task_ids == {"rollback_decision.record_decision"}  # all at once
        assert run.trigger_dag_id.startswith("rollback_checkout_production_")
        assert "target_version" in run.conf and "parent_id" in run.conf
    assert rule(dag.task_dict["outcome.all_regions_rolled_back"]) == "all_done"
    assert dag.params.get_param("trigger").schema["enum"] == ["manual", "alert"]
    # with GeoDNS (payments): the weights back to the configured shares, regions whose rollback failed drained
    payments = build_service_dags(load_service(SERVICES / "payments" / ".deploy").config)["rollback_payments_production"]
    restore = payments.task_dict["global_traffic.restore_dns_weights"]
    assert rule(restore) == "all_done_min_one_success" and restore.failed_regions_of


def test_tag_templates_follow_the_spec(checkout_dags):
    assert checkout_dags["deploy_checkout_development"].task_dict[
        "code_push.extract_commit_metadata"].tag_template == "dev-{short_sha}"
    assert checkout_dags["deploy_checkout_staging"].task_dict["start_deployment"].tag_template == "staging-{version}"


def test_every_dag_has_validated_params(checkout_dags, hello_dags):
    from airflow.sdk import Param  # noqa: F401
    from airflow.sdk.definitions.param import ParamsDict

    for dag in [*checkout_dags.values(), *hello_dags.values()]:
        assert isinstance(dag.params, ParamsDict) and dag.params
        if "version" in dag.params:
            schema = dag.params.get_param("version").schema
            assert schema["pattern"].startswith("^[A-Za-z0-9]")


def test_environment_and_region_platform_overrides(tmp_path):
    """Each region of the payments example has its own ALB listener rule; an environment file may give its own
    cluster; every task of a target gets that target's settings."""
    dags = build_service_dags(load_service(SERVICES / "payments" / ".deploy").config)
    rules = {}
    for region in ("us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"):
        dag = dags[f"deploy_payments_production_{region}"]
        platforms = {(t.platform["listener_rule_arn"], t.platform["region"], t.platform["connection"])
                     for t in dag.tasks if isinstance(getattr(t, "platform", None), dict)}
        (rule_arn, aws_region, conn), = platforms
        assert f":{region}:" in rule_arn and aws_region == region and conn == f"aws_payments_{region.replace('-', '_')}"
        rules[region] = rule_arn
        rollback = dags[f"rollback_payments_production_{region}"]
        assert {t.platform["listener_rule_arn"] for t in rollback.tasks if isinstance(getattr(t, "platform", None), dict)} == {rule_arn}
    assert len(set(rules.values())) == 4
    # the rollout watches each region with the region's own settings
    rollout = dags["deploy_payments_production"]
    observe = rollout.task_dict["regional_rollout.region_2_eu_west_1.observe"]
    assert observe.platform["listener_rule_arn"] == rules["eu-west-1"] and observe.platform["region"] == "eu-west-1"

    # An environment file's own cluster, for one environment only.
    import shutil

    deploy = tmp_path / "payments" / ".deploy"
    shutil.copytree(SERVICES / "payments" / ".deploy", deploy)
    (deploy / "staging.yaml").write_text("environment: staging\nstrategy: bluegreen\nplatform:\n  cluster: payments-staging\n"
                                         "  listenerRuleArn: arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/s/1/2/3\n")
    dags = build_service_dags(load_service(deploy).config)
    staging = {t.platform["cluster"] for t in dags["deploy_payments_staging"].tasks
               if isinstance(getattr(t, "platform", None), dict)}
    assert staging == {"payments-staging"}
    assert {t.platform["cluster"] for t in dags["deploy_payments_production_us-east-1"].tasks
            if isinstance(getattr(t, "platform", None), dict)} == {"payments"}


def test_minimal_production_builds_and_its_watch_checks_the_rollback_conditions(tmp_path):
    """A valid config always builds: production with a plain rolling update and a watch, but no canary and no
    auto-rollback conditions, watches the service's rollback conditions (spec: error rate, availability)."""
    deploy = tmp_path / "mini" / ".deploy"
    deploy.mkdir(parents=True)
    (deploy / "service.yaml").write_text("service: mini\nplatform:\n  command: [python, app.py, --port, '{port}']\n")
    (deploy / "production.yaml").write_text("environment: production\nstrategy: rolling\nreplicas: 2\n"
                                            "monitoring: {duration: 10m}\n")
    result = load_service(deploy)
    assert result.errors == []
    dags = build_service_dags(result.config)
    watch = dags["deploy_mini_production"].task_dict["monitoring_and_alerting.watch_metrics"]
    assert [c["text"] for c in watch.conditions] == ["error_rate > 5%", "availability < 99%"]
    assert {d.dag_id for d in dags.values()} >= {"deploy_mini_production", "rollback_mini_production", "hotfix_mini"}


def test_migration_dags(checkout_dags):
    """Each environment's migrations reach its own database; contract, repair and restore are DAGs of their own."""
    conn = {env: checkout_dags[dag].task_dict[task].conn_id for env, dag, task in (
        ("development", "deploy_checkout_development", "deploy_to_dev.run_migrations"),
        ("staging", "deploy_checkout_staging", "blue_green_deployment.run_migrations"),
        ("production", "deploy_checkout_production_us-west-2", "canary_deployment.run_migrations"))}
    assert conn == {env: f"checkout_db_{env}" for env in conn}
    production = checkout_dags["deploy_checkout_production_us-west-2"]
    migrate = production.task_dict["canary_deployment.run_migrations"]
    assert (migrate.phase, migrate.direction, migrate.dry_run, migrate.deferrable) == ("expand", "up", False, True)
    contract = checkout_dags["migrate_checkout_contract"]
    chain_of(contract, ["readiness.check_old_version_retired", "readiness.plan_contract_migrations",
                        "contract.run_contract_migrations"])
    run = contract.task_dict["contract.run_contract_migrations"]
    assert (run.phase, run.backup, run.record_deployment) == ("contract", True, False)
    assert contract.task_dict["readiness.check_old_version_retired"].delay.days == 7  # the spec's week
    repair = checkout_dags["repair_checkout_migrations"]
    assert {t.task_id: t.expected for t in repair.tasks} == {
        f"repair_{env}": f"repair checkout {env}" for env in ("development", "staging", "production")}
    assert repair.params.get_param("confirm").schema["pattern"] == \
        "^repair checkout (development|staging|production)$"
    restore = checkout_dags["restore_checkout_production_database"]
    assert restore.params.get_param("confirm").schema["pattern"] == "^restore\\ checkout\\ production$"
    assert restore.task_dict["restore_from_backup"].conn_id == "checkout_db_production"


def test_incident_workflow(hello_dags):
    """The spec's outage recovery: response, diagnosis, a person's choice, verification, the report."""
    dag = hello_dags["incident_hello"]
    assert_phases_in_order(dag, ["initial_response", "diagnosis", "mitigation", "verification", "post_incident"])
    choose = dag.task_dict["mitigation.choose_mitigation"]
    assert choose.options_mapping == {"Roll back": "mitigation.roll_back", "Scale up": "mitigation.scale_up",
                                      "Maintenance mode": "mitigation.enter_maintenance_mode"}
    assert "**Maintenance mode**: customers get a maintenance page" in choose.body
    assert dag.task_dict["mitigation.roll_back"].trigger_dag_id == "rollback_hello_production"
    assert dag.task_dict["mitigation.scale_up"].replicas == 6  # twice production's 3
    chain_of(dag, ["mitigation.mitigation_in_place", "verification.run_smoke_tests", "verification.verify_error_rate",
                   "post_incident.post_incident_report", "post_incident.resolve_status_page"])
    assert dag.task_dict["report_unresolved"].trigger_rule == "one_failed"
    # every mitigation's path joins the same verification: tasks of the paths not taken skip without holding it
    assert {rule(dag.task_dict[f"verification.{t}"]) for t in ("run_smoke_tests", "verify_error_rate")} == {
        "none_failed_min_one_success"}
    assert rule(dag.task_dict["post_incident.post_incident_report"]) == "none_failed_min_one_success"
    assert {"verification.confirm_service_fixed", "verification.leave_maintenance_mode",
            "verification.run_smoke_tests", "verification.verify_error_rate"} <= \
        dag.task_dict["report_unresolved"].upstream_task_ids


def test_incident_maintenance_mode_path(hello_dags):
    """Maintenance mode: the page goes on; a person confirms the fix; the smoke tests check the replicas behind
    the page; the page goes off; live traffic is watched; a failure after leaving puts the page back."""
    dag = hello_dags["incident_hello"]
    enter = dag.task_dict["mitigation.enter_maintenance_mode"]
    assert (enter.enabled, enter.message) == (True, "We are fixing a problem. Please try again in a few minutes.")
    assert set(enter.targets) == {""} and enter.targets[""]["type"] == "local"
    chain_of(dag, ["mitigation.enter_maintenance_mode", "verification.confirm_service_fixed",
                   "verification.run_smoke_tests", "verification.leave_maintenance_mode",
                   "verification.verify_error_rate", "post_incident.post_incident_report"])
    # only the maintenance path waits for a person and leaves maintenance mode: both skip on the other paths
    for task_id in ("verification.confirm_service_fixed", "verification.leave_maintenance_mode"):
        assert "mitigation.enter_maintenance_mode" in ancestors(dag, task_id)
        assert rule(dag.task_dict[task_id]) == "all_success", task_id
    confirm = dag.task_dict["verification.confirm_service_fixed"]
    assert confirm.options == ["Leave maintenance mode"] and confirm.response_timeout.total_seconds() == 4 * 3600
    assert dag.task_dict["verification.run_smoke_tests"].role == "stable"  # the replicas, behind the page
    leave = dag.task_dict["verification.leave_maintenance_mode"]
    assert leave.enabled is False and not leave.only_if_entered
    back = dag.task_dict["verification.back_into_maintenance"]
    assert (back.enabled, back.only_if_entered, rule(back)) == (True, True, "one_failed")
    assert back.upstream_task_ids == {"verification.leave_maintenance_mode", "verification.verify_error_rate"}


def test_incident_maintenance_mode_only_where_the_platform_has_it(checkout_dags):
    """The platform decides from its settings (a new platform needs no factory change): checkout's Gateway API
    router has no maintenance Service, so maintenance mode is not offered there."""
    from airflow_deploy_provider.platforms.base import DeploymentPlatform

    dag = checkout_dags["incident_checkout"]
    assert "Maintenance mode" not in dag.task_dict["mitigation.choose_mitigation"].options
    assert not any("maintenance" in t for t in dag.task_dict)

    class Toy(DeploymentPlatform):  # a platform from another package that says nothing about maintenance
        type = "toy"

    assert Toy.maintenance_support({}) == "platform 'toy' has no maintenance mode"


def test_incident_fail_over_restores_traffic_in_watched_steps():
    """A multi-region service fails over through the GeoDNS weights; once a person confirms the region is fixed,
    its weight comes back in the configured steps, each watched on the region's own metrics."""
    payments = build_service_dags(load_service(SERVICES / "payments" / ".deploy").config)["incident_payments"]
    assert set(payments.task_dict["mitigation.choose_mitigation"].options) == {"Roll back", "Fail over",
                                                                                "Maintenance mode"}
    fail_over = payments.task_dict["mitigation.fail_over"]
    assert fail_over.drain == ["{{ params.region or '' }}"] and fail_over.require_drain
    chain_of(payments, ["mitigation.fail_over", "restoration.confirm_region_fixed", "restoration.restore_traffic_10",
                        "restoration.restore_traffic_50", "restoration.restore_traffic_100",
                        "post_incident.post_incident_report"])
    assert payments.task_dict["restoration.confirm_region_fixed"].options == ["Restore traffic"]
    step = payments.task_dict["restoration.restore_traffic_10"]
    assert (step.percent, step.pause, step.region_to_restore) == (10, 300.0, "{{ params.region or '' }}")
    assert set(step.targets) == {"us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"}
    # each region's watch reads its own ALB through its own connection
    assert step.targets["eu-west-1"]["platform"]["connection"] == "aws_payments_eu_west_1"
    assert "eu-west-1" in step.targets["eu-west-1"]["platform"]["listener_rule_arn"]
    assert {m["name"] for m in step.metrics} >= {"error_rate"}
    assert payments.params.get_param("region").schema["enum"][1:] == [
        "us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"]
    unresolved = payments.task_dict["report_unresolved"].upstream_task_ids
    assert {"restoration.confirm_region_fixed", "restoration.restore_traffic_50"} <= unresolved
    # maintenance mode covers every region; after it each region's own traffic is watched
    assert set(payments.task_dict["mitigation.enter_maintenance_mode"].targets) == set(step.targets)
    verify = payments.task_dict["verification.regions.verify_eu_west_1"]
    assert (verify.region, verify.version, verify.budget) == ("eu-west-1", "", "incident-verification-eu-west-1")
    chain_of(payments, ["verification.confirm_service_fixed", "verification.leave_maintenance_mode",
                        "verification.regions.verify_eu_west_1", "post_incident.post_incident_report"])


def test_incident_maintenance_mode_on_kubernetes_needs_a_gateway_api_maintenance_service(tmp_path):
    """With a maintenance Service behind a Gateway API router Kubernetes has maintenance mode; with another
    router the setting is warned about and the choice is not offered."""
    for router, offered in (("gateway-api", True), ("istio", False)):
        deploy = tmp_path / router / ".deploy"
        deploy.mkdir(parents=True)
        (deploy / "service.yaml").write_text(
            f"service: kshop\nplatform:\n  type: kubernetes\n  router: {{type: {router}, maintenanceService: sorry}}\n"
            "metrics: {connection: prom}\n")
        (deploy / "production.yaml").write_text("environment: production\nstrategy: rolling\nreplicas: 2\n")
        result = load_service(deploy)
        assert result.errors == []
        warnings = [i.code for i in result.issues if i.severity == "warning"]
        assert ("maintenance-service-router" in warnings) is not offered, warnings
        dag = build_service_dags(result.config, only="incident_kshop")["incident_kshop"]
        assert ("Maintenance mode" in dag.task_dict["mitigation.choose_mitigation"].options) is offered
