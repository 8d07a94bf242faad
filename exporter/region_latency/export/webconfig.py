"""The web configuration file (`--web.config.file`): TLS and basic auth in Prometheus' exporter-toolkit format.

Operators of node_exporter and blackbox_exporter already have these files; the same file works here, key for key
(docs/OPERATIONS.md, "Securing the endpoints"). As in exporter-toolkit, relative file names are relative to the
web config file's directory, the file is re-read when it (or a certificate it names) changes, and a file that
stops being valid fails closed: every request is answered 500 until it is fixed, and that is logged once.

Where Python's `ssl` module cannot do what Go's `crypto/tls` does, the option is refused with a one-line error
instead of being silently weakened: `client_auth_type` `RequestClientCert` and `RequireAnyClientCert` (a client
certificate that is asked for but never verified). `curve_preferences` sets the first curve only (Python's ssl
module sets one ECDH curve) and `http2` is accepted and ignored (the server speaks HTTP/1.1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)

# Go's tls.CipherSuites() names (the ones exporter-toolkit accepts) -> OpenSSL's names. TLS 1.3 suites are not
# configurable in Go either; they are accepted and leave OpenSSL's TLS 1.3 defaults in place.
CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
CURVES: Mapping[str, str] = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
                             "X25519": "X25519"}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "RequireClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# The headers exporter-toolkit lets a user set, with the values it accepts (None: any value).
EXTRA_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# Compared against when the user is unknown, so an unknown user costs the same bcrypt time as a known one.
_DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
AUTH_CACHE_SIZE = 100
RECHECK_SECONDS = 1.0  # how often a request may look at the files' modification times


class WebConfigError(Exception):
    """A web config problem; str() is one line naming the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TLSServerConfig(_Model):
    cert: str | None = None
    key: str | None = Field(default=None, repr=False)
    client_ca: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @field_validator("client_auth_type")
    @classmethod
    def _client_auth(cls, value: str) -> str:
        value = value or "NoClientCert"
        if value not in CLIENT_AUTH_TYPES:
            raise ValueError(f"invalid client_auth_type {value!r} (use one of {', '.join(CLIENT_AUTH_TYPES)})")
        if value in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
            raise ValueError(f"client_auth_type {value} (a client certificate that is never verified) is not "
                             "supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with a client CA")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in TLS_VERSIONS:
            raise ValueError(f"unknown TLS version {value!r} (use {', '.join(TLS_VERSIONS)})")
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in CIPHER_SUITES:
                raise ValueError(f"unknown cipher: {name}")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _curves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in CURVES:
                raise ValueError(f"unknown curve: {name} (use {', '.join(CURVES)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if not self.enabled:
            return self
        if not (self.cert or self.cert_file):
            raise ValueError("missing one of cert or cert_file")
        if not (self.key or self.key_file):
            raise ValueError("missing one of key or key_file")
        if self.cert and self.cert_file:
            raise ValueError("cert and cert_file are both set; use one")
        if self.key and self.key_file:
            raise ValueError("key and key_file are both set; use one")
        has_ca = bool(self.client_ca or self.client_ca_file)
        if has_ca and self.client_auth_type == "NoClientCert":
            raise ValueError("client CA's have been configured without a Client Auth Policy")
        if self.client_auth_type != "NoClientCert" and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file (or client_ca)")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        return self

    @property
    def enabled(self) -> bool:
        """exporter-toolkit's IsEnabled: any certificate, key or client-auth setting turns TLS on."""
        return bool(self.cert_file or self.cert or self.key_file or self.key or self.client_ca_file
                    or self.client_ca or self.client_auth_type != "NoClientCert")


class HTTPServerConfig(_Model):
    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("headers must be a mapping of header name to value")
        for name, text in value.items():
            if name not in EXTRA_HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured (known: {', '.join(EXTRA_HEADERS)})")
            allowed = EXTRA_HEADERS[name]
            if not isinstance(text, str) or any(c in text for c in "\r\n"):
                raise ValueError(f"invalid value for {name}: {text!r}")
            if allowed is not None and text not in allowed:
                raise ValueError(f"invalid value for {name}. Expected one of: {list(allowed)}, but got: {text!r}")
        return value


class RateLimitConfig(_Model):
    interval: float = 0.0  # seconds between two requests; 0 disables the limiter
    burst: int = Field(default=0, ge=0)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> float:
        return _duration(value)


class WebConfig(_Model):
    """The file's content, validated. Paths are still as written (relative to the file's directory)."""

    tls_server_config: TLSServerConfig = Field(default_factory=TLSServerConfig)
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict, repr=False)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @field_validator("tls_server_config", "http_server_config", "rate_limit", "basic_auth_users", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("basic_auth_users")
    @classmethod
    def _users(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if not _is_bcrypt_hash(hashed):
                raise ValueError(f"user {user!r}: the password must be a bcrypt hash "
                                 "(e.g. from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")
        return value


def _is_bcrypt_hash(value: str) -> bool:
    parts = value.split("$")
    return (len(parts) == 4 and parts[0] == "" and parts[1] in ("2a", "2b", "2y") and parts[2].isdigit()
            and 4 <= int(parts[2]) <= 31 and len(parts[3]) == 53)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: Any) -> float:
    """Go-style durations as exporter-toolkit reads them (`1s`, `500ms`, `1m`), or `0`."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value != 0:
            raise ValueError(f"invalid duration {value!r}: give a unit, e.g. 1s or 500ms")
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    for unit in ("ms", "s", "m", "h"):
        number = text.removesuffix(unit)
        if number != text:
            try:
                seconds = float(number) * _DURATION_UNITS[unit]
            except ValueError:
                break
            if seconds >= 0 and seconds < 1e9:
                return seconds
            break
    raise ValueError(f"invalid duration {value!r} (use e.g. 1s, 500ms, 1m)")


# --- loading ------------------------------------------------------------------------------------------------------


def parse_web_config(text: str, source: str = "web config") -> WebConfig:
    """Validate the file's text; WebConfigError (one line) for anything wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise WebConfigError(f"{where}: invalid YAML: {' '.join(str(problem).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise WebConfigError(f"{source}: the top level must be a mapping (tls_server_config, basic_auth_users, ...)")
    try:
        return WebConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        elif first["type"] == "value_error":
            problem = str(first["ctx"]["error"])
        else:
            problem = str(first["msg"])
        raise WebConfigError(f"{source}: {loc + ': ' if loc else ''}{' '.join(problem.split())}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WebConfigError(f"failed to read {what} ({path}): {exc.strerror or exc}") from None


def build_ssl_context(tls: TLSServerConfig, base: Path) -> ssl.SSLContext:
    """A server SSLContext from the TLS section; WebConfigError (one line) when a file or setting is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    openssl_names = [name for name in (CIPHER_SUITES[c] for c in tls.cipher_suites) if name]
    if openssl_names:
        try:
            context.set_ciphers(":".join(openssl_names))
        except ssl.SSLError:
            raise WebConfigError(f"none of cipher_suites is available: {', '.join(tls.cipher_suites)}") from None
    if tls.curve_preferences:
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    _load_cert_chain(context, tls, base)
    if tls.client_auth_type != "NoClientCert":
        context.verify_mode = (ssl.CERT_REQUIRED if tls.client_auth_type == "RequireAndVerifyClientCert"
                               else ssl.CERT_OPTIONAL)
        try:
            if tls.client_ca_file:
                path = base / tls.client_ca_file
                _read(path, "client_ca_file")
                context.load_verify_locations(cafile=str(path))
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except ssl.SSLError as exc:
            raise WebConfigError(f"unusable client CA: {exc.reason or exc}") from None
    return context


def _load_cert_chain(context: ssl.SSLContext, tls: TLSServerConfig, base: Path) -> None:
    """ssl loads certificates from files only: inline PEM is written to a private temporary file first."""
    cert = _read(base / tls.cert_file, "cert_file") if tls.cert_file else (tls.cert or "").encode()
    key = _read(base / tls.key_file, "key_file") if tls.key_file else (tls.key or "").encode()
    directory = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    fd, name = _private_temp(directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(name)
    except ssl.SSLError as exc:
        raise WebConfigError(f"failed to load X509KeyPair: {exc.reason or exc}") from None
    finally:
        os.unlink(name)


def _private_temp(directory: Path) -> tuple[int, str]:
    import tempfile

    try:
        return tempfile.mkstemp(prefix=".web-tls-", suffix=".pem", dir=directory)
    except OSError:
        return tempfile.mkstemp(prefix=".web-tls-", suffix=".pem")


def client_san_allowed(peercert: Mapping[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """exporter-toolkit's client_allowed_sans: some DNS, email, IP or URI SAN of the client equals an entry."""
    if not peercert:
        return False
    return any(str(value).strip() in allowed for _kind, value in peercert.get("subjectAltName", ()))


# --- basic auth ---------------------------------------------------------------------------------------------------


class BasicAuth:
    """bcrypt checks of `Authorization: Basic` headers, with verified answers cached.

    A bcrypt check costs ~50-100 ms of CPU at cost 10: a scraper that sends the same credentials every 15 s must
    not pay it each time, so the outcome is cached under a SHA-256 of (user, stored hash, password) -- never the
    password itself -- in a bounded LRU (100 entries, as exporter-toolkit). A changed hash in the file is a
    different key, so a password change takes effect at once.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()  # one bcrypt at a time: a flood of guesses costs one core, not all

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def _key(self, header: str | None) -> tuple[bytes, bytes, bytes, bool] | None:
        credentials = parse_basic_auth(header)
        if credentials is None:
            return None
        user, password = credentials
        hashed = self._users.get(user)
        known = hashed is not None
        stored = hashed if hashed is not None else _DUMMY_HASH
        digest = hashlib.sha256(b"\0".join((user.encode(), stored, password))).digest()
        return digest, stored, password, known

    def cached(self, header: str | None) -> bool | None:
        """True/False when the answer is known without bcrypt (no auth configured, cached, malformed); else None."""
        if not self._users:
            return True
        key = self._key(header)
        if key is None:
            return False
        with self._lock:
            verdict = self._cache.get(key[0])
            if verdict is not None:
                self._cache.move_to_end(key[0])
        return verdict

    def check(self, header: str | None) -> bool:
        """The full check (may run bcrypt: call it off the event loop)."""
        verdict = self.cached(header)
        if verdict is not None:
            return verdict
        key = self._key(header)
        assert key is not None
        digest, stored, password, known = key
        with self._bcrypt_lock:
            try:
                matches = bcrypt.checkpw(password, stored)
            except ValueError:
                matches = False
        verdict = matches and known
        with self._lock:
            self._cache[digest] = verdict
            while len(self._cache) > AUTH_CACHE_SIZE:
                self._cache.popitem(last=False)
        return verdict


def parse_basic_auth(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from `Basic base64(user:password)`, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# --- the live file ------------------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket (exporter-toolkit's rate_limit): `burst` requests at once, then one per `interval`."""

    def __init__(self, interval: float, burst: int, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self.burst = max(burst, 1)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) / self.interval)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


@dataclass(frozen=True)
class WebSettings:
    """One valid version of the file, ready to use."""

    config: WebConfig
    headers: tuple[tuple[str, str], ...]
    auth: BasicAuth
    ssl_context: ssl.SSLContext | None
    limiter: RateLimiter | None

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def settings_from(config: WebConfig, base: Path) -> WebSettings:
    tls = config.tls_server_config
    limit = config.rate_limit
    return WebSettings(
        config=config,
        headers=tuple(config.http_server_config.headers.items()),
        auth=BasicAuth(config.basic_auth_users),
        ssl_context=build_ssl_context(tls, base) if tls.enabled else None,
        limiter=RateLimiter(limit.interval, limit.burst) if limit.interval > 0 else None,
    )


class WebConfigFile:
    """The web config file, re-read when it or a file it names changes (checked at most once a second).

    `load` at start-up raises WebConfigError; later, a file that became invalid makes `current()` return None
    (requests are then answered 500, as exporter-toolkit does), logged once per change, until it is valid again.
    Whether TLS is on is fixed at start: a file that turns TLS on or off later is refused like an invalid one.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Any = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._settings: WebSettings | None = self._load()
        self._stamp = self._files_stamp(self._settings.config)
        self._tls = self._settings.tls
        self._checked_at = clock()
        self._error: str | None = None

    def _load(self) -> WebSettings:
        if self.path.is_dir():
            raise WebConfigError(f"{self.path}: is a directory, not a web config file")
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WebConfigError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise WebConfigError(f"{self.path}: not UTF-8 text: {exc.reason}") from None
        config = parse_web_config(text, str(self.path))
        try:
            return settings_from(config, self.path.parent)
        except WebConfigError as exc:
            raise WebConfigError(f"{self.path}: tls_server_config: {exc}") from None

    def _files_stamp(self, config: WebConfig | None) -> tuple[tuple[str, int, int, int], ...]:
        names = [self.path]
        if config is not None:
            tls = config.tls_server_config
            names += [self.path.parent / n for n in (tls.cert_file, tls.key_file, tls.client_ca_file) if n]
        out = []
        for name in names:
            try:
                st = name.stat()
                out.append((str(name), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(name), -1, -1, -1))
        return tuple(out)

    @property
    def tls(self) -> bool:
        return self._tls

    def current(self) -> WebSettings | None:
        """The settings in force, re-read if the files changed; None while the file is invalid."""
        now = self._clock()
        if now - self._checked_at < RECHECK_SECONDS:
            return self._settings
        with self._lock:
            if now - self._checked_at < RECHECK_SECONDS:
                return self._settings
            self._checked_at = now
            stamp = self._files_stamp(self._settings.config if self._settings else self._last_config())
            if stamp == self._stamp:
                return self._settings
            self._stamp = stamp
            try:
                settings = self._load()
                if settings.tls != self._tls:
                    raise WebConfigError(f"{self.path}: TLS cannot be turned {'on' if settings.tls else 'off'} "
                                         "while running; restart the exporter")
            except WebConfigError as exc:
                if str(exc) != self._error:
                    log.error("web config invalid, answering 500 until it is fixed: %s", exc)
                self._error = str(exc)
                self._settings = None
                return None
            if self._error is not None or self._settings is None:
                log.info("web config valid again: %s", self.path)
            else:
                log.info("web config reloaded: %s", self.path)
            self._error = None
            self._settings = settings
            self._stamp = self._files_stamp(settings.config)
            return settings

    def _last_config(self) -> WebConfig | None:
        try:
            return parse_web_config(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, WebConfigError):
            return None

    def server_context(self) -> ssl.SSLContext | None:
        """The SSLContext to listen with: its SNI callback swaps in the current file's context per handshake."""
        if self._settings is None or self._settings.ssl_context is None:
            return None
        outer = self._settings.ssl_context

        def pick(ssl_object: Any, _server_name: str | None, _context: ssl.SSLContext) -> int | None:
            settings = self.current()
            if settings is None or settings.ssl_context is None:
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            if settings.ssl_context is not outer:
                ssl_object.context = settings.ssl_context
            return None

        outer.sni_callback = pick
        return outer


def validate_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Load once, as `check-config --web.config.file` does; WebConfigError for any problem."""
    settings = WebConfigFile(path).current()
    assert settings is not None  # a first load that fails raises instead
    return settings.config
