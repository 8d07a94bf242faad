"""The web config file: exporter-toolkit's format, its errors, basic auth with a cache, reloads."""

from __future__ import annotations

import base64
import logging
import os
import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme

from region_latency.export import webconfig
from region_latency.export.webconfig import (
    BasicAuth,
    RateLimiter,
    WebConfigError,
    WebConfigFile,
    parse_basic_auth,
    parse_web_config,
)

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> Path:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return tmp_path


def test_empty_file_means_no_tls_and_no_auth() -> None:
    config = parse_web_config("")
    assert not config.tls_server_config.enabled
    assert config.basic_auth_users == {}


@pytest.mark.parametrize(("text", "message"), [
    ("tls_server_config:\n  cert_file: a.crt\n", "missing one of key or key_file"),
    ("tls_server_config:\n  key_file: a.key\n", "missing one of cert or cert_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS99\n", "unknown TLS version 'TLS99'"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_INVENTED]\n",
     "unknown cipher: TLS_INVENTED"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP999]\n", "unknown curve"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca\n",
     "client CA's have been configured without a Client Auth Policy"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
     "needs client_ca_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
     "is not supported"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Whatever\n",
     "invalid client_auth_type"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
     "min_version TLS13 is above max_version TLS12"),
    ("http_server_config:\n  headers:\n    X-Custom: 1\n", "HTTP header 'X-Custom' can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "invalid value for X-Frame-Options"),
    ("basic_auth_users:\n  alice: plaintext\n", "user 'alice': the password must be a bcrypt hash"),
    ("tls_server_config:\n  cert_fil: a\n", "tls_server_config.cert_fil: unknown key"),
    ("nonsense: 1\n", "nonsense: unknown key"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("a: [\n", "invalid YAML"),
    ("rate_limit:\n  interval: 5\n  burst: 1\n", "give a unit"),
])
def test_bad_files_get_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(WebConfigError) as info:
        parse_web_config(text, "web.yml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("web.yml")


def test_files_relative_to_the_config_directory(certs: Path, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    elsewhere = os.getcwd()
    try:
        os.chdir("/")
        settings = WebConfigFile(path).current()
    finally:
        os.chdir(elsewhere)
    assert settings is not None and settings.ssl_context is not None


def test_unreadable_certificate_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    with pytest.raises(WebConfigError, match=r"failed to read cert_file .*missing.crt"):
        WebConfigFile(path)


def test_mismatched_key_is_refused(certs: Path, ca: trustme.CA) -> None:
    other = ca.issue_cert("other")
    other.private_key_pem.write_to_path(str(certs / "other.key"))
    path = certs / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n")
    with pytest.raises(WebConfigError, match="failed to load X509KeyPair"):
        WebConfigFile(path)


def test_inline_certificate_and_key(certs: Path) -> None:
    cert = (certs / "server.crt").read_text()
    key = (certs / "server.key").read_text()
    indent = lambda text: "\n".join("    " + line for line in text.splitlines())  # noqa: E731
    path = certs / "web.yml"
    path.write_text(f"tls_server_config:\n  cert: |\n{indent(cert)}\n  key: |\n{indent(key)}\n")
    settings = WebConfigFile(path).current()
    assert settings is not None and settings.tls


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="is a directory"):
        WebConfigFile(tmp_path)
    with pytest.raises(WebConfigError, match="cannot read"):
        WebConfigFile(tmp_path / "nope.yml")


def test_secrets_stay_out_of_reprs() -> None:
    config = parse_web_config(f"basic_auth_users:\n  alice: '{HASH}'\n")
    assert HASH not in repr(config)


# --- basic auth ---------------------------------------------------------------------------------------------------


def test_basic_auth_right_wrong_unknown_and_malformed() -> None:
    auth = BasicAuth({"alice": HASH})
    assert auth.check(basic("alice", "secret"))
    assert not auth.check(basic("alice", "wrong"))
    assert not auth.check(basic("bob", "secret"))
    assert not auth.check(None)
    assert not auth.check("Bearer abc")
    assert not auth.check("Basic !!!")
    assert not auth.check("Basic " + base64.b64encode(b"no-colon").decode())


def test_no_users_means_open() -> None:
    assert BasicAuth({}).cached(None) is True


def test_verified_answers_are_cached_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", lambda p, h: calls.append(p) or real(p, h))
    auth = BasicAuth({"alice": HASH})
    assert auth.cached(basic("alice", "secret")) is None
    assert auth.check(basic("alice", "secret"))
    assert auth.check(basic("alice", "secret"))
    assert auth.cached(basic("alice", "secret")) is True
    assert not auth.check(basic("alice", "nope"))
    assert auth.cached(basic("alice", "nope")) is False
    assert len(calls) == 2
    assert all(b"secret" not in key for key in auth._cache)


def test_auth_cache_is_bounded() -> None:
    auth = BasicAuth({"alice": bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()})
    for i in range(webconfig.AUTH_CACHE_SIZE + 20):
        auth.check(basic("alice", f"guess-{i}"))
    assert len(auth._cache) == webconfig.AUTH_CACHE_SIZE


def test_parse_basic_auth_keeps_colons_in_passwords() -> None:
    assert parse_basic_auth(basic("alice", "a:b:c")) == ("alice", b"a:b:c")


# --- rate limit ---------------------------------------------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_one_per_interval() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert not limiter.allow()
    now[0] = 1.01
    assert limiter.allow()
    assert not limiter.allow()


def test_rate_limit_durations() -> None:
    config = parse_web_config("rate_limit:\n  interval: 500ms\n  burst: 3\n")
    assert config.rate_limit.interval == 0.5


# --- reloads ------------------------------------------------------------------------------------------------------


def test_changes_are_picked_up_and_invalid_files_fail_closed(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")
    live = WebConfigFile(path, clock=lambda: now[0])
    first = live.current()
    assert first is not None and first.auth.check(basic("alice", "secret"))

    other = bcrypt.hashpw(b"changed", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users:\n  alice: '{other}'\n")
    assert live.current() is first  # not re-checked within a second
    now[0] = 2.0
    second = live.current()
    assert second is not None and second is not first
    assert second.auth.check(basic("alice", "changed"))
    assert not second.auth.check(basic("alice", "secret"))

    caplog.set_level(logging.INFO, logger="region_latency.export.webconfig")
    path.write_text("basic_auth_users:\n  alice: plaintext-now\n")
    for tick in (4.0, 6.0, 8.0):
        now[0] = tick
        os.utime(path, ns=(int(tick * 1e9), int(tick * 1e9)))
        assert live.current() is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "web.yml" in errors[0].getMessage()
    assert "plaintext-now" not in caplog.text

    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")
    now[0] = 10.0
    assert live.current() is not None
    assert "valid again" in caplog.text


def test_tls_cannot_be_switched_on_while_running(certs: Path) -> None:
    now = [0.0]
    path = certs / "web.yml"
    path.write_text("")
    live = WebConfigFile(path, clock=lambda: now[0])
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    now[0] = 5.0
    assert live.current() is None


def test_sni_callback_swaps_in_a_renewed_certificate(certs: Path, ca: trustme.CA) -> None:
    now = [0.0]
    path = certs / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    live = WebConfigFile(path, clock=lambda: now[0])
    context = live.server_context()
    assert isinstance(context, ssl.SSLContext) and context.sni_callback is not None
    renewed = ca.issue_cert("localhost", "127.0.0.1")
    renewed.private_key_pem.write_to_path(str(certs / "server.key"))
    renewed.cert_chain_pems[0].write_to_path(str(certs / "server.crt"))
    now[0] = 5.0

    class FakeSSLObject:
        context: ssl.SSLContext | None = None

    obj = FakeSSLObject()
    assert context.sni_callback(obj, "localhost", context) is None  # type: ignore[arg-type]
    assert obj.context is not None and obj.context is not context
