"""stopbot.yaml: validation, ${VAR} interpolation, and error messages that name file, key and reason."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from bot.config import (
    ConfigError,
    Settings,
    UnknownResourceError,
    configured_database_url,
    load_config,
    parse_config,
)
from providers.simulators.samples import sample_config

GOOD = """
providers:
  - {name: qovery, type: qovery, base_url: https://api.qovery.com, token: "${QOVERY_API_TOKEN}", organization_id: org-1}
  - {name: nova, type: openstack, auth_url: https://keystone.example.com/v3, username: bot, password: "${OS_PASSWORD}", project_name: dev, user_domain_name: Default, project_domain_name: Default}
  - {name: okeanos, type: okeanos, base_url: https://lod.example.com, token: "${OKEANOS_TOKEN}"}
  - {name: feldera, type: feldera, base_url: https://feldera.example.com, token: "${FELDERA_API_KEY}"}
resources:
  - {name: dev-eu, provider: qovery, id: c-1, tags: {env: dev}}
  - {name: web-1, provider: nova, id: s-1}
  - {name: spark, provider: okeanos, id: app-1, lambda_instance_id: li-1}
  - {name: etl, provider: feldera, id: etl}
stops: {confirm_ttl: 5m, timeout: 1h}
"""
ENV = {
    "QOVERY_API_TOKEN": "qov-secret",
    "OS_PASSWORD": "os-secret",
    "OKEANOS_TOKEN": "ok-secret",
    "FELDERA_API_KEY": "apikey:fel-secret",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stopbot.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=ENV if env is None else env)
    return str(info.value).splitlines()


def test_valid_config_loads_with_secrets_interpolated(tmp_path: Path) -> None:
    """A valid file loads; ${VAR} values come from the environment and stay secret."""
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert [p.name for p in config.providers] == ["qovery", "nova", "okeanos", "feldera"]
    qovery = config.provider("qovery")
    assert qovery.token.get_secret_value() == "qov-secret"  # type: ignore[union-attr]
    assert "qov-secret" not in repr(config)
    assert config.stops.confirm_ttl == dt.timedelta(minutes=5)
    assert config.stops.timeout == dt.timedelta(hours=1)
    spark = config.resource("spark")
    assert (spark.provider, spark.id, dict(spark.options)) == (
        "okeanos",
        "app-1",
        {"lambda_instance_id": "li-1"},
    )


def test_resource_by_provider_and_id(tmp_path: Path) -> None:
    """A resource can be named as provider:id."""
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert config.resource("qovery:c-1").name == "dev-eu"


def test_lookups_follow_a_replaced_resource_list(tmp_path: Path) -> None:
    """Lookups are indexed, and a copy with other resources answers from its own."""
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert config.resource_config("dev-eu").id == "c-1"
    renamed = config.resources[0].model_copy(update={"name": "dev-eu-2"})
    other = config.model_copy(update={"resources": [renamed, *config.resources[1:]]})
    assert other.resource("qovery:c-1").name == "dev-eu-2"
    assert other.resource_config("dev-eu-2").id == "c-1"
    with pytest.raises(KeyError):
        other.resource_config("dev-eu")
    assert config.resource("qovery:c-1").name == "dev-eu"


def test_all_resources_are_built_once_until_the_list_is_replaced(tmp_path: Path) -> None:
    """all_resources() builds the providers' resources once (10,000 took 26 ms at each
    schedule's run); a caller's list is its own; a replaced list (discovery) is built
    anew."""
    config = load_config(write(tmp_path, GOOD), env=ENV)
    first = config.all_resources()
    again = config.all_resources()
    assert again == first and again is not first and again[0] is first[0]
    first.clear()
    assert len(config.all_resources()) == len(config.resources) > 1
    renamed = config.resources[0].model_copy(update={"name": "dev-eu-2"})
    config.resources = [renamed]
    assert [r.name for r in config.all_resources()] == ["dev-eu-2"]


def test_unknown_resource_suggests_closest_names(tmp_path: Path) -> None:
    """An unknown name lists the closest configured names."""
    config = load_config(write(tmp_path, GOOD), env=ENV)
    with pytest.raises(UnknownResourceError) as info:
        config.resource("dev-ue")
    assert info.value.suggestions == ["dev-eu"]
    assert str(info.value) == "Unknown resource 'dev-ue'. Did you mean dev-eu?"


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    """A ${VAR} that is not set names the variable and the key that uses it."""
    env = {k: v for k, v in ENV.items() if k != "OS_PASSWORD"}
    assert problems(tmp_path, GOOD, env) == [
        f"{tmp_path / 'stopbot.yaml'}: providers[1].password: environment variable OS_PASSWORD is not set"
    ]


def test_escaped_dollar_is_kept_literally(tmp_path: Path) -> None:
    """$${X} stays the literal text ${X}."""
    text = GOOD.replace("organization_id: org-1", 'organization_id: "$${NOT_A_VAR}"')
    config = load_config(write(tmp_path, text), env=ENV)
    assert config.provider("qovery").organization_id == "${NOT_A_VAR}"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("type: qovery,", "type: aws,"),
            "providers[0]: unknown provider type; expected one of 'qovery', 'openstack', 'okeanos', 'feldera'",
        ),
        (
            (", organization_id: org-1", ""),
            "providers[0].organization_id: missing: this key is required",
        ),
        (
            ("tags: {env: dev}", "tagz: {env: dev}"),
            "resources[0].tagz: unknown key (check its spelling)",
        ),
        (
            ("tags: {env: dev}", '"ta\\ngs": {env: dev}'),
            "resources[0].'ta\\ngs': unknown key (check its spelling)",
        ),
        (
            ("provider: nova, id: s-1", "provider: novaa, id: s-1"),
            "resources[1].provider: no provider named 'novaa' (known: feldera, nova, okeanos, qovery)",
        ),
        (("name: web-1", "name: dev-eu"), "resources[1].name: 'dev-eu' is used twice"),
        (
            (", lambda_instance_id: li-1", ""),
            "resources[2].lambda_instance_id: required for an ~okeanos application: the lambda instance it runs on",
        ),
        (
            ("tags: {env: dev}}", "tags: {env: dev}, approval: {approvers: []}}"),
            "resources[0].approval.approvers: an approval that is required needs at least one approver",
        ),
        (
            ("confirm_ttl: 5m", "confirm_ttl: soon"),
            "stops.confirm_ttl: 'soon' is not a duration: use a number and a unit, like 30m, 4h, 3d or 1h30m",
        ),
    ],
)
def test_each_error_names_key_and_reason(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    """Every kind of mistake is reported with its key path and a reason."""
    assert change[0] in GOOD
    assert problems(tmp_path, GOOD.replace(*change, 1)) == [
        f"{tmp_path / 'stopbot.yaml'}: {expected}"
    ]


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error says where it is."""
    [line] = problems(tmp_path, "providers: [\n  {name: x\n")
    assert line.startswith(f"{tmp_path / 'stopbot.yaml'}: line 3, column 1: invalid YAML:")


def test_not_a_mapping(tmp_path: Path) -> None:
    """A file that is a list, not a mapping, is refused plainly."""
    assert problems(tmp_path, "- a\n- b\n") == [
        f"{tmp_path / 'stopbot.yaml'}: the file must be a mapping (providers:, resources:)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    """A missing file says so and how to point at another."""
    with pytest.raises(ConfigError, match=r"no such file \(set STOPBOT_CONFIG or pass a path\)"):
        load_config(tmp_path / "nope.yaml")


def test_sample_config_is_valid() -> None:
    """The built-in sample estate is a valid configuration."""
    config = parse_config(sample_config("http://127.0.0.1:1"), "sample", env={})
    assert len(config.resources) == 11
    assert config.resource("etl").provider == "feldera"


def test_check_config_prints_summary_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot check-config` prints a summary and no secret."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = write(tmp_path, GOOD)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{path}: OK",
        "  providers: 4",
        "    qovery (qovery): 1 resource",
        "    nova (openstack): 1 resource",
        "    okeanos (okeanos): 1 resource",
        "    feldera (feldera): 1 resource",
        "  resources: 4",
        "  schedules: 0",
    ]
    assert not any(secret in out for secret in ENV.values())


def test_check_config_error_exit_code_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad file exits 2 with the problem on stderr, no traceback."""
    path = write(tmp_path, yaml.safe_dump({"providers": [{"name": "q", "type": "qovery"}]}))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path}: providers[0].token: missing: this key is required" in err


def test_check_config_lists_the_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OK summary lists each schedule: when, where, what it selects."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    schedules = """
schedules:
  - {name: nightly-dev, cron: "0 20 * * 1-5", timezone: Europe/Paris, select: {tags: {env: dev}}, channel: C0DEV}
  - {name: web, cron: "30 19 * * *", select: {resources: [web-1, etl]}, warn_before: 5m}
"""
    path = write(tmp_path, GOOD + schedules)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "  schedules: 2",
        "    nightly-dev: 0 20 * * 1-5 (Europe/Paris), tags env=dev, warned 15m before, in C0DEV",
        "    web: 30 19 * * * (UTC), resources web-1, etl, warned 5m before",
    ]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "{}\n"])
def test_check_config_refuses_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """An empty file is an error that says what to put in it, not "OK, providers: 0"."""
    path = write(tmp_path, text)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        "stopbot: configuration error:\n"
        f"{path}: the file is empty: name providers: and resources: (see the README), or "
        "delete it to run on the built-in simulators\n"
    )


def test_check_config_of_a_file_without_providers_runs_on_the_simulators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with no providers is checked laid over the embedded estate, as it would run."""
    path = write(tmp_path, "admins: [U0LOCALDEV]\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: OK (no providers: it runs on <built-in simulators>)"
    assert "  resources: 11" in out
    assert out[-2:] == [
        "  schedules: 1",
        out[-1],
    ] and out[-1].startswith("    office-hours: ")


def test_every_mistake_comes_in_one_pass(tmp_path: Path) -> None:
    """Schema mistakes and dangling references together, in the user's words: fixing the
    first batch reveals nothing new. A name an invalid entry holds counts as defined."""
    text = """
providers:
  - {name: q, type: qovery, base_url: ftp://x, token: t, organization_id: o}
  - {name: f, type: feldera, base_url: http://x, requests: {max_in_flight: 0}}
resources:
  - {name: a, provider: q, id: x}
  - {name: b, provider: nope, id: y}
  - {name: c, provider: f, id: z, tags: {env: dev}}
schedules:
  - {name: s, cron: "0 20 * * *", timezone: Mars/Base, select: {resources: [a, zz]}}
locks: {max_duration: forever}
"""
    where = tmp_path / "stopbot.yaml"
    assert problems(tmp_path, text) == [
        f"{where}: providers[0].base_url: must be a URL starting with https:// (or http://)",
        f"{where}: providers[1].requests.max_in_flight: must be 1 or more",
        f"{where}: locks.max_duration: 'forever' is not a duration: use a number and a unit, "
        "like 30m, 4h, 3d or 1h30m",
        f"{where}: schedules[0].timezone: unknown time zone 'Mars/Base' (use an IANA name "
        "such as Europe/Paris)",
        f"{where}: resources[1].provider: no provider named 'nope' (known: f, q)",
        f"{where}: schedules[0].select.resources[1]: no resource named 'zz'",
    ]


def test_a_sweep_slower_than_a_third_of_the_lease_is_refused() -> None:
    """recovery.sweep_interval must fit three times in recovery.lease: a live process's
    heartbeat would otherwise come after another took it for dead."""
    document = {
        **sample_config("http://127.0.0.1:1"),
        "recovery": {"lease": "30s", "sweep_interval": "15s"},
    }
    with pytest.raises(ConfigError, match="sweep_interval must be at most a third of lease"):
        parse_config(document, "sample", env={})
    fine = {**document, "recovery": {"lease": "30s", "sweep_interval": "10s"}}
    assert parse_config(fine, "sample", env={}).recovery.sweep_interval.total_seconds() == 10


def test_a_url_or_a_name_of_the_wrong_form_is_said_in_words(tmp_path: Path) -> None:
    """A provider URL that is no http(s) URL (Qovery's too) and a resource name with a
    space are refused with what the value must look like, not the schema's pattern."""
    found = problems(
        tmp_path,
        "providers:\n"
        "  - {name: q, type: qovery, base_url: 'ftp://qovery', token: t, organization_id: o}\n"
        "resources:\n"
        "  - {name: 'dev eu', provider: q, id: x}\n",
    )
    assert [line.split(": ", 1)[1] for line in found] == [
        "providers[0].base_url: must be a URL starting with https:// (or http://)",
        "resources[0].name: use letters, digits, '_', '.' and '-' only, starting with a letter "
        "or digit",
    ]


def test_a_database_url_that_is_no_postgresql_url_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    """``database_url`` must be a postgresql:// URL: anything else is said in words, and
    its password is never repeated."""
    found = problems(tmp_path, "database_url: 'mysql://stopbot:hunter2-secret@db/stopbot'\n")
    assert [line.split(": ", 1)[1] for line in found] == [
        "database_url: the database URL must start with postgresql:// (not mysql://)"
    ]
    assert "hunter2" not in "".join(found)


def test_the_store_is_the_environments_url_then_the_configurations_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STOPBOT_DATABASE_URL wins over database_url in stopbot.yaml (read alone, with its
    ${VAR}), which wins over the SQLite file STOPBOT_DB; a bad variable is a ConfigError
    naming it, without its password."""
    path = tmp_path / "stopbot.yaml"
    path.write_text("database_url: postgresql://bot:${DB_PASSWORD}@db/stopbot\n")
    for key in [k for k in os.environ if k.startswith("STOPBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("STOPBOT_DB", str(tmp_path / "bot.db"))
    monkeypatch.setenv("DB_PASSWORD", "s3cret-pw")
    configured = configured_database_url(path)
    assert configured is not None
    assert Settings().store_location() == str(tmp_path / "bot.db")
    assert Settings().store_location(configured) == "postgresql://bot:s3cret-pw@db/stopbot"
    assert configured_database_url(tmp_path / "absent.yaml") is None
    monkeypatch.setenv("STOPBOT_DATABASE_URL", "postgres://other@db2/stopbot")
    assert Settings().store_location(configured) == "postgres://other@db2/stopbot"
    monkeypatch.setenv("STOPBOT_DATABASE_URL", "postgresql://bot:s3cret-pw@db:port/stopbot")
    with pytest.raises(ConfigError, match=r"^STOPBOT_DATABASE_URL: the database URL is not") as err:
        Settings().store_location(configured)
    assert "s3cret" not in str(err.value)
