"""AWS environment for tests: dummy credentials or none at all, never the developer's real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)

DUMMY_ACCESS_KEY = "AKIDTESTTESTTESTTEST"


def isolate_aws(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """No credentials from anywhere: env cleared, config files empty, instance metadata (IMDS) off."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, file_name in (("AWS_SHARED_CREDENTIALS_FILE", "credentials"), ("AWS_CONFIG_FILE", "config")):
        path = directory / file_name
        path.write_text("")
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def use_dummy_credentials(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Isolated, plus static dummy keys: boto3 signs requests that only a local fake will accept."""
    isolate_aws(monkeypatch, directory)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
