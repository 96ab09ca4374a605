"""API tokens in the PostgreSQL store front-ends share: `palabre token … --store URL`, and
`TokenAuthenticator` over it on each front-end (a token created once works on every one, a
revocation is seen by every one within the cache's ttl)."""

from __future__ import annotations

import io
import time

import pytest

from server.auth import Scope, TokenAuthenticator
from server.cli import build_parser
from server.store import StoreError, TokenRow
from server.tokens import run_token_command
from tests.postgresql import PostgresServer

pytestmark = pytest.mark.timeout(60)


def token_command(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_token_command(build_parser().parse_args(["token", *argv]), out, err)
    return status, out.getvalue(), err.getvalue()


def test_a_token_created_once_works_on_every_front_end_and_a_revocation_reaches_each(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    status, out, _ = token_command("create", "--store", url, "--tenant", "acme", "--scope", "read")
    assert status == 0
    token = out.splitlines()[-1]
    front_ends = [TokenAuthenticator.open_postgresql(url, ttl_s=0.3) for _ in range(2)]
    try:
        for auth in front_ends:
            principal = auth.principal_of(token)
            assert principal is not None and principal.tenant_id == "acme"
            assert principal.scopes == frozenset({Scope.READ})
        status, out, _ = token_command("list", "--store", url)
        assert status == 0 and "acme" in out and token not in out
        token_id = out.splitlines()[1].split()[0]
        assert token_command("revoke", "--store", url, token_id)[0] == 0
        time.sleep(0.35)
        assert [auth.principal_of(token) for auth in front_ends] == [None, None]
        assert token_command("revoke", "--store", url, "999")[0] == 1
    finally:
        for auth in front_ends:
            auth.close()


def test_the_store_must_be_postgresql_and_its_password_is_never_echoed(
    postgres_server: PostgresServer,
) -> None:
    status, _, err = token_command("list", "--store", "mysql://x")
    assert status == 2 and "postgresql://" in err
    bad = postgres_server.url("postgres", password="wrong-secret")
    status, _, err = token_command("list", "--store", bad)
    assert status == 2 and "wrong-secret" not in err and "***" in err


def test_a_lookup_that_fails_refuses_without_caching_the_refusal() -> None:
    answers: list[TokenRow | StoreError] = [
        StoreError("token lookup failed: TimeoutError"),
        TokenRow(7, "acme", ("read",), 0.0, None),
    ]

    def lookup(_hash: str) -> TokenRow | None:
        answer = answers.pop(0)
        if isinstance(answer, StoreError):
            raise answer
        return answer

    auth = TokenAuthenticator(lookup, ttl_s=60)
    assert auth.principal_of("plb_x") is None
    principal = auth.principal_of("plb_x")
    assert principal is not None and principal.token_id == 7
