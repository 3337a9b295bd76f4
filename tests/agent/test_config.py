import socket
from pathlib import Path

import pytest

from shipyard.client.config import FIELDS, GitCredential, load_settings
from shipyard.errors import ConfigError
from shipyard.redact import MASK

CLEARML_CONF = """
api {
    api_server: "https://api.example.com/"
    web_server: https://app.example.com
    files_server: https://files.example.com
    credentials { access_key: "AK123", secret_key: "SK-file-secret" }
    verify_certificate: false
}
agent {
    worker_id: "box:3"
    git_user: alice
    git_pass: "git-file-pass"
    venvs_dir: ~/.clearml/venvs-builds
    venvs_cache { path: /var/cache/venvs }
    vcs_cache { path: ~/.clearml/vcs-cache }
    python_binary: ""
    package_manager { type: pip }
    task_ping_interval_sec: 45
    default_docker { image: "python:3.11" }
}
sdk { development { task_reuse_time_window_in_hours: 72 } }
shipyard {
    queues: [gpu, default]
    poll_interval_s: 2
    log_batch_ms: 100
    max_runtime_s: 3600
    git_credentials: [{host: gitlab.example.com, user: bot, password: "gl-token-xyz"}]
    redact_patterns: ["AKIA[0-9A-Z]{16}"]
    extra_env { HF_TOKEN: "hf-secret", OMP_NUM_THREADS: 4 }
    docker { allowed_args: ["--ipc=host"] }
}
"""


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture()
def conf(home):
    home.mkdir()
    path = home / "clearml.conf"
    path.write_text(CLEARML_CONF)
    return path


def load(home, **kwargs):
    env = {"HOME": str(home), **kwargs.pop("env", {})}
    return load_settings(env=env, **kwargs)


def test_defaults_without_any_file(home):
    settings = load(home)
    assert settings.api.api_server == "http://localhost:8008"
    assert settings.api.files_server == "http://localhost:8081"
    assert settings.api.web_server == "http://localhost:8080"
    assert settings.api.verify_ssl is True
    assert settings.agent.worker_name == socket.gethostname()
    assert settings.agent.worker_id == f"{socket.gethostname()}:0"
    assert settings.agent.poll_interval_s == 5.0
    assert settings.agent.long_poll_s == 30.0
    assert settings.agent.status_report_s == 30.0
    assert settings.agent.log_batch_ms == 200
    assert settings.agent.abort_grace_s == 10.0
    assert settings.agent.max_runtime_s is None
    assert settings.agent.cache_dir == home / ".shipyard/cache"
    assert settings.agent.venv_cache_dir == home / ".shipyard/cache/venvs"
    assert settings.agent.git_cache_dir == home / ".shipyard/cache/vcs"
    assert settings.agent.uv_enabled is True
    assert settings.config_file is None
    assert set(settings.sources.values()) == {"default"}
    assert set(settings.sources) == {spec.key for spec in FIELDS}


def test_clearml_conf_keys_are_read(home, conf):
    settings = load(home)
    source = f"file:{conf}"
    assert settings.config_file == conf
    assert settings.api.api_server == "https://api.example.com"
    assert settings.api.access_key == "AK123"
    assert settings.api.secret_key == "SK-file-secret"
    assert settings.api.verify_ssl is False
    assert settings.agent.worker_id == "box:3"
    assert settings.agent.work_dir == home / ".clearml/venvs-builds"
    assert settings.agent.venv_cache_dir == Path("/var/cache/venvs")
    assert settings.agent.git_cache_dir == home / ".clearml/vcs-cache"
    assert settings.agent.python_binary is None  # empty means "choose from the task"
    assert settings.agent.uv_enabled is False  # package_manager.type: pip
    assert settings.agent.ping_s == 45
    assert settings.agent.docker.default_image == "python:3.11"
    assert settings.sources["api.secret_key"] == source
    assert settings.sources["agent.python_binary"] == "default"


def test_shipyard_section_is_read(home, conf):
    agent = load(home).agent
    assert agent.queues == ("gpu", "default")
    assert agent.poll_interval_s == 2.0
    assert agent.log_batch_ms == 100
    assert agent.max_runtime_s == 3600
    assert agent.git_credentials == (GitCredential("gitlab.example.com", "bot", "gl-token-xyz"),)
    assert agent.redact_patterns == ("AKIA[0-9A-Z]{16}",)
    assert dict(agent.extra_env) == {"HF_TOKEN": "hf-secret", "OMP_NUM_THREADS": "4"}
    assert agent.docker.allowed_args == ("--ipc=host",)


def test_environment_beats_file_and_cli_beats_environment(home, conf):
    env = {"CLEARML_API_HOST": "http://env-host:8008", "CLEARML_WORKER_ID": "env:1", "SHIPYARD_POLL_INTERVAL_S": "7"}
    settings = load(home, env=env, overrides={"agent.worker_id": "cli:9", "agent.poll_interval_s": None})
    assert settings.api.api_server == "http://env-host:8008"
    assert settings.sources["api.api_server"] == "env:CLEARML_API_HOST"
    assert settings.agent.worker_id == "cli:9"
    assert settings.sources["agent.worker_id"] == "cli"
    assert settings.agent.poll_interval_s == 7.0  # a None override means "not given"
    assert settings.sources["agent.poll_interval_s"] == "env:SHIPYARD_POLL_INTERVAL_S"


def test_clearml_env_names_are_honoured(home):
    env = {
        "CLEARML_API_ACCESS_KEY": "ak", "CLEARML_API_SECRET_KEY": "sk", "CLEARML_FILES_HOST": "http://f",
        "CLEARML_WEB_HOST": "http://w", "CLEARML_WORKER_NAME": "gpu-box", "CLEARML_AGENT_GIT_USER": "u",
        "CLEARML_AGENT_GIT_PASS": "p", "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "1.5",
    }
    settings = load(home, env=env)
    assert (settings.api.access_key, settings.api.secret_key) == ("ak", "sk")
    assert (settings.api.files_server, settings.api.web_server) == ("http://f", "http://w")
    assert settings.agent.worker_name == "gpu-box"
    assert settings.agent.worker_id == "gpu-box:0"
    assert (settings.agent.git_user, settings.agent.git_pass) == ("u", "p")
    assert settings.agent.poll_interval_s == 1.5


def test_shipyard_env_wins_over_clearml_alias(home):
    env = {"SHIPYARD_POLL_INTERVAL_S": "3", "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "9"}
    assert load(home, env=env).agent.poll_interval_s == 3.0


def test_env_lists_and_json(home):
    env = {
        "SHIPYARD_QUEUES": "a, b,,c",
        "SHIPYARD_GIT_CREDENTIALS": '[{"host": "h", "user": "u", "password": "p"}]',
        "SHIPYARD_EXTRA_ENV": '{"A": "1"}',
        "SHIPYARD_REDACT_PATTERNS": '["x,y", "z+"]',
        "SHIPYARD_UV_ENABLED": "off",
        "SHIPYARD_MAX_RUNTIME_S": "none",
    }
    agent = load(home, env=env).agent
    assert agent.queues == ("a", "b", "c")
    assert agent.git_credentials == (GitCredential("h", "u", "p"),)
    assert dict(agent.extra_env) == {"A": "1"}
    assert agent.redact_patterns == ("x,y", "z+")
    assert agent.uv_enabled is False
    assert agent.max_runtime_s is None


def test_config_file_from_env_and_explicit_argument(home, tmp_path):
    other = tmp_path / "other.conf"
    other.write_text('api { api_server: "http://other:1" }')
    assert load(home, env={"CLEARML_CONFIG_FILE": str(other)}).api.api_server == "http://other:1"
    assert load(home, env={"TRAINS_CONFIG_FILE": str(other)}).api.api_server == "http://other:1"
    assert load(home, config_file=other).sources["api.api_server"] == f"file:{other}"


def test_one_lookup_order_flag_env_home_then_the_file_up_wrote(home, tmp_path):
    """Issue 20 #6: flag > $CLEARML_CONFIG_FILE > ~/clearml.conf > the clearml.conf `shipyard up`
    wrote (~/.shipyard, or $SHIPYARD_DATA_DIR); each answer says why that file."""
    written = home / ".shipyard" / "clearml.conf"
    written.parent.mkdir(parents=True)
    written.write_text('api { api_server: "http://up:1" }')
    settings = load(home)
    assert (settings.config_file, settings.api.api_server) == (written, "http://up:1")
    assert settings.config_reason == "written by `shipyard up`"
    moved = tmp_path / "data" / "clearml.conf"
    moved.parent.mkdir()
    moved.write_text('api { api_server: "http://data-dir:1" }')
    assert load(home, env={"SHIPYARD_DATA_DIR": str(moved.parent)}).config_file == moved
    (home / "clearml.conf").write_text('api { api_server: "http://home:1" }')
    assert load(home).api.api_server == "http://home:1"
    assert load(home).config_reason == "~/clearml.conf"
    named = tmp_path / "named.conf"
    named.write_text('api { api_server: "http://named:1" }')
    assert load(home, env={"CLEARML_CONFIG_FILE": str(named)}).config_reason == "named by $CLEARML_CONFIG_FILE"
    flag = tmp_path / "flag.conf"
    flag.write_text('api { api_server: "http://flag:1" }')
    assert load(home, env={"CLEARML_CONFIG_FILE": str(named)}, config_file=flag).api.api_server == "http://flag:1"


def test_no_config_file_says_where_it_looked(home):
    settings = load(home)
    assert settings.config_file is None and "~/.shipyard" in settings.config_reason


@pytest.mark.parametrize("api, files, web", [
    ("http://127.0.0.1:8008", "http://127.0.0.1:8081", "http://127.0.0.1:8080"),
    ("https://api.ml.example.com", "https://files.ml.example.com", "https://app.ml.example.com"),
    ("http://ml-box:9000", "http://ml-box:8081", "http://ml-box:8080"),
])
def test_unset_web_and_files_servers_keep_the_configured_host(home, api, files, web):
    """Issue 20 #11: only the API host configured: the web server (CLEARML_WEB_HOST of every task,
    hence the SDK's results-page link) is on that host, not `localhost`."""
    settings = load(home, env={"CLEARML_API_HOST": api})
    assert (settings.api.files_server, settings.api.web_server) == (files, web)
    assert load(home, env={"CLEARML_API_HOST": api, "CLEARML_WEB_HOST": "http://web:1"}).api.web_server == "http://web:1"


def test_missing_named_config_file_is_an_error(home, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(home, config_file=tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match="CLEARML_CONFIG_FILE"):
        load(home, env={"CLEARML_CONFIG_FILE": str(tmp_path / "nope.conf")})


def test_unparseable_config_file(home, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("api { api_server: [ }")
    with pytest.raises(ConfigError, match="bad.conf"):
        load(home, config_file=bad)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("shipyard { poll_interval_s: fast }", "agent.poll_interval_s"),
        ("shipyard { poll_interval_s: 0 }", "agent.poll_interval_s"),
        ("shipyard { log_batch_ms: 1.5 }", "agent.log_batch_ms"),
        ("api { verify_certificate: maybe }", "api.verify_ssl"),
        ('api { api_server: "localhost:8008" }', "api.api_server"),
        ("shipyard { queues: {a: 1} }", "agent.queues"),
        ('shipyard { redact_patterns: ["(unclosed"] }', "agent.redact_patterns"),
        ("shipyard { git_credentials: [{host: h}] }", "agent.git_credentials"),
        ("agent { package_manager.type: pipenv }", "agent.package_manager_type"),
        ("agent { worker_id: [1, 2] }", "agent.worker_id"),
    ],
)
def test_bad_file_values_name_key_and_source(home, tmp_path, text, key):
    path = tmp_path / "c.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(home, config_file=path)
    assert key in str(caught.value)
    assert str(path) in str(caught.value)


def test_bad_env_and_cli_values_name_their_source(home):
    with pytest.raises(ConfigError, match=r"agent.abort_grace_s from env:SHIPYARD_ABORT_GRACE_S"):
        load(home, env={"SHIPYARD_ABORT_GRACE_S": "-1"})
    with pytest.raises(ConfigError, match=r"agent.status_report_s from cli"):
        load(home, overrides={"agent.status_report_s": "soon"})
    with pytest.raises(ConfigError, match="invalid JSON"):
        load(home, env={"SHIPYARD_EXTRA_ENV": "{oops"})


def test_unknown_override_key_is_rejected(home):
    with pytest.raises(ConfigError, match="agent.pol_interval_s"):
        load(home, overrides={"agent.pol_interval_s": 3})


def test_package_manager_uv_enables_uv_and_shipyard_key_wins(home, tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("agent.package_manager.type: uv")
    assert load(home, config_file=path).agent.uv_enabled is True
    path.write_text("agent.package_manager.type: conda\nshipyard.uv_enabled: true")
    assert load(home, config_file=path).agent.uv_enabled is True


def test_unknown_shipyard_keys_become_warnings(home, tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("shipyard { pol_interval_s: 3, docker { imgae: x } }")
    assert load(home, config_file=path).warnings == (
        "unknown key shipyard.pol_interval_s in config file",
        "unknown key shipyard.docker.imgae in config file",
    )


def test_describe_masks_secrets(home, conf):
    rows = {key: (value, source) for key, value, source in load(home).describe()}
    assert rows["api.secret_key"] == (MASK, f"file:{conf}")
    assert rows["api.access_key"][0] == "AK123"
    assert rows["agent.git_pass"][0] == MASK
    assert rows["agent.git_credentials"][0] == (GitCredential("gitlab.example.com", "bot", MASK),)
    assert rows["agent.extra_env"][0] == {"HF_TOKEN": MASK, "OMP_NUM_THREADS": "4"}
    assert rows["agent.poll_interval_s"] == (2.0, f"file:{conf}")
    assert [key for key, _, _ in load(home).describe()] == [spec.key for spec in FIELDS]
    text = repr(load(home).describe())
    for secret in ("SK-file-secret", "git-file-pass", "gl-token-xyz", "hf-secret"):
        assert secret not in text


def test_secrets_lists_what_must_be_redacted(home, conf):
    assert set(load(home).secrets()) == {"SK-file-secret", "git-file-pass", "gl-token-xyz", "hf-secret"}


def test_git_credentials_for_host(home, conf):
    agent = load(home).agent
    assert agent.git_credentials_for("GitLab.example.com") == GitCredential("gitlab.example.com", "bot", "gl-token-xyz")
    assert agent.git_credentials_for("github.com") == GitCredential("github.com", "alice", "git-file-pass")
    assert load(home, env={"HOME": str(home / "elsewhere")}).agent.git_credentials_for("github.com") is None


def test_settings_are_frozen(home):
    settings = load(home)
    with pytest.raises(AttributeError):
        settings.agent.poll_interval_s = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.agent.extra_env["X"] = "1"  # type: ignore[index]


def test_get_by_dotted_key(home):
    settings = load(home, overrides={"agent.docker.default_image": "img:1"})
    assert settings.get("agent.docker.default_image") == "img:1"
    assert settings.sources["agent.docker.default_image"] == "cli"


EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "clearml.conf.example"


def test_example_config_loads_cleanly(home):
    settings = load(home, config_file=EXAMPLE)
    assert settings.warnings == ()
    assert settings.api.api_server == "http://localhost:8008"


def test_example_config_documents_every_file_key(home, tmp_path):
    # Uncomment the commented-out settings (`# key: value`), then every key must be present.
    import re

    from pyhocon import ConfigFactory

    text = re.sub(r"(?m)^(\s*)# (?=[A-Za-z_][\w.]*\s*[:{=])", r"\1", EXAMPLE.read_text())
    tree = ConfigFactory.parse_string(text)
    missing = [key for spec in FIELDS for key in spec.file_keys if tree.get(key, "MISSING") == "MISSING"]
    assert missing == []
