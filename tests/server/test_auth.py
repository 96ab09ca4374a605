"""API tokens, the token authenticator, scope rules, exposure checks and per-connection limits.

Pure and fast: a real SQLite store in a temporary folder, fake clocks, no server.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.auth import (
    TOKEN_PREFIX,
    OpenAccess,
    Principal,
    Scope,
    TokenAuthenticator,
    ask_allowed,
    authenticate_token,
    hash_token,
    is_loopback,
    new_token,
    origin_allowed,
    parse_scopes,
    presented_token,
    startup_refusal,
)
from server.cli import build_parser
from server.cli import main as palabre
from server.config import LimitsConfig, ServerConfig
from server.http import HttpRequest, HttpResponse, Router
from server.limits import ConnectionLimits, TokenBucket, admit_sessions
from server.store import Store, TokenRow
from server.tokens import run_token_command
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.events import Ask, Start


class Clock:
    """A settable clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "palabre.db") as s:
        yield s


def issue(store: Store, tenant: str, *scopes: str) -> tuple[str, TokenRow]:
    token = new_token()
    return token, store.create_token(tenant, hash_token(token), scopes)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- tokens ---------------------------------------------------------------------------------------


def test_new_tokens_are_prefixed_random_and_hashed_to_hex() -> None:
    a, b = new_token(), new_token()
    assert a.startswith(TOKEN_PREFIX) and len(a) == len(TOKEN_PREFIX) + 43
    assert a != b
    assert hash_token(a) == hash_token(a) != hash_token(b)
    assert len(hash_token(a)) == 64 and int(hash_token(a), 16) >= 0


def test_parse_scopes() -> None:
    assert parse_scopes(["stream", "read", "stream"]) == {Scope.STREAM, Scope.READ}
    with pytest.raises(ValueError, match="unknown scope 'write'"):
        parse_scopes(["write"])


def test_presented_token_from_header_or_query() -> None:
    assert presented_token(bearer("plb_x"), {}) == "plb_x"
    assert presented_token({"authorization": "bearer  plb_x "}, {}) == "plb_x"
    assert presented_token({}, {"token": "plb_q"}) == "plb_q"
    assert presented_token(bearer("plb_h"), {"token": "plb_q"}) == "plb_h"
    assert presented_token({"authorization": "Basic dXNlcjpwdw=="}, {"token": "plb_q"}) is None
    assert presented_token({"authorization": "Bearer"}, {}) is None
    assert presented_token({}, {"token": ""}) is None


def test_principal_admin_implies_every_scope() -> None:
    admin = Principal("t", frozenset({Scope.ADMIN}))
    reader = Principal("t", frozenset({Scope.READ}))
    assert all(admin.allows(s) for s in Scope)
    assert reader.allows(Scope.READ) and not reader.allows(Scope.STREAM) and not reader.allows(Scope.ADMIN)


def test_open_access_is_the_tenant_with_every_scope() -> None:
    principal = OpenAccess("acme").authenticate({}, {})
    assert principal is not None and principal.tenant_id == "acme" and principal.scopes == frozenset(Scope)
    assert authenticate_token(OpenAccess("acme"), None) == principal


# --- the token authenticator ----------------------------------------------------------------------


def test_token_authenticator_finds_tenant_scopes_and_id(store: Store) -> None:
    token, row = issue(store, "acme", "stream", "read")
    auth = TokenAuthenticator(store.lookup_token)
    by_header = auth.authenticate(bearer(token), {})
    assert by_header == Principal("acme", frozenset({Scope.STREAM, Scope.READ}), row.id)
    assert auth.authenticate({}, {"token": token}) == by_header
    assert authenticate_token(auth, token) == by_header
    assert auth.authenticate({}, {}) is None
    assert auth.authenticate(bearer(new_token()), {}) is None
    assert authenticate_token(auth, None) is None


def test_malformed_tokens_are_refused_without_a_lookup(store: Store) -> None:
    lookups: list[str] = []

    def lookup(token_hash: str) -> TokenRow | None:
        lookups.append(token_hash)
        return store.lookup_token(token_hash)

    auth = TokenAuthenticator(lookup)
    assert auth.authenticate(bearer("not-a-palabre-token"), {}) is None
    assert auth.authenticate(bearer(TOKEN_PREFIX + "x" * 300), {}) is None
    assert lookups == []


def test_lookups_are_cached_and_revocation_applies_after_the_ttl(store: Store) -> None:
    token, row = issue(store, "acme", "read")
    lookups: list[str] = []

    def lookup(token_hash: str) -> TokenRow | None:
        lookups.append(token_hash)
        return store.lookup_token(token_hash)

    clock = Clock()
    auth = TokenAuthenticator(lookup, ttl_s=5.0, clock=clock)
    assert auth.authenticate(bearer(token), {}) is not None
    assert auth.authenticate(bearer(token), {}) is not None
    assert len(lookups) == 1

    store.revoke_token(row.id)
    clock.now += 4.9
    assert auth.authenticate(bearer(token), {}) is not None, "cached for ttl_s"
    clock.now += 0.2
    assert auth.authenticate(bearer(token), {}) is None, "revoked once the cache entry expired"
    assert len(lookups) == 2


def test_failed_lookups_are_cached_in_a_bounded_cache(store: Store) -> None:
    lookups: list[str] = []

    def lookup(token_hash: str) -> TokenRow | None:
        lookups.append(token_hash)
        return None

    auth = TokenAuthenticator(lookup, clock=Clock(), max_cached=8)
    guess = new_token()
    assert auth.authenticate(bearer(guess), {}) is None
    assert auth.authenticate(bearer(guess), {}) is None
    assert len(lookups) == 1
    for _ in range(50):
        auth.authenticate(bearer(new_token()), {})
    assert len(auth._cache) <= 8


def test_unknown_stored_scopes_are_ignored(store: Store) -> None:
    token, _ = issue(store, "acme", "read", "future-scope")
    principal = TokenAuthenticator(store.lookup_token).authenticate(bearer(token), {})
    assert principal is not None and principal.scopes == {Scope.READ}


def test_open_creates_the_database(tmp_path: Path) -> None:
    auth = TokenAuthenticator.open(tmp_path / "new" / "palabre.db")
    try:
        assert auth.authenticate(bearer(new_token()), {}) is None
    finally:
        auth.close()
    assert (tmp_path / "new" / "palabre.db").exists()


# --- who may do what ------------------------------------------------------------------------------


def test_ask_needs_read_or_stream_about_its_own_conversation() -> None:
    reader = Principal("t", frozenset({Scope.READ}))
    streamer = Principal("t", frozenset({Scope.STREAM}))
    own = Ask("what?", "conversation", None)
    named = Ask("what?", "conversation", "c1")
    other = Ask("what?", "conversation", "c2")
    tenant = Ask("what?", "tenant")
    assert all(ask_allowed(reader, a, None) for a in (own, named, other, tenant))
    assert ask_allowed(streamer, own, "c1") and ask_allowed(streamer, named, "c1")
    assert not ask_allowed(streamer, other, "c1")
    assert not ask_allowed(streamer, tenant, "c1")
    assert not ask_allowed(streamer, own, None), "not streaming: no conversation of its own"


def test_routes_need_read_by_default_and_say_so() -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        raise AssertionError

    router = Router()
    router.add("/healthz", handler, scope=None)
    router.add("/v1/stats", handler, scope=Scope.ADMIN)
    router.add("/v1/conversations/", handler)

    def scope_of(target: str) -> Scope | None:
        matched = router.match(target)
        assert matched is not None
        return matched[1].required_scope

    assert scope_of("/healthz") is None
    assert scope_of("/v1/stats?token=x") is Scope.ADMIN
    assert scope_of("/v1/conversations/c1") is Scope.READ


async def test_routes_are_matched_by_method_and_another_method_gets_405() -> None:
    async def read(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, b"read")

    async def erase(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, b"erase")

    router = Router()
    router.add("/v1/conversations/", read)
    router.add("/v1/conversations/", erase, scope=Scope.DELETE, method="DELETE")
    router.add("/v1/stats", read, scope=Scope.ADMIN)
    got = router.match("/v1/conversations/c1", "DELETE")
    assert got is not None and got[1].required_scope is Scope.DELETE and got[1].params == ("c1",)
    assert (await got[0](got[1])).body == b"erase"
    got = router.match("/v1/conversations/c1")
    assert got is not None and (await got[0](got[1])).body == b"read"
    for target, method in (("/v1/stats", "DELETE"), ("/v1/conversations/c1", "POST")):
        got = router.match(target, method)
        assert got is not None and got[1].required_scope is None
        refused = await got[0](got[1])
        assert refused.status == 405 and b"method_not_allowed" in refused.body
    assert router.match("/nowhere", "DELETE") is None
    assert Principal("t", frozenset({Scope.ADMIN})).allows(Scope.DELETE)
    assert not Principal("t", frozenset({Scope.READ})).allows(Scope.DELETE)


# --- exposure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True)],
        *[("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("example.com", False)],
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_startup_refuses_open_access_on_a_network() -> None:
    assert startup_refusal(ServerConfig()) is None
    refusal = startup_refusal(ServerConfig(host="0.0.0.0"))
    assert refusal is not None and "--auth" in refusal
    assert startup_refusal(ServerConfig(host="0.0.0.0", auth=True)) is None
    audiosocket = startup_refusal(ServerConfig(auth=True, audiosocket_port=9092))
    assert audiosocket is not None and "--audiosocket-token" in audiosocket
    assert startup_refusal(ServerConfig(auth=True, audiosocket_port=9092, audiosocket_token="plb_x")) is None


def test_origin_check() -> None:
    assert origin_allowed("https://evil.example", ())
    assert origin_allowed(None, ("https://app.example",)), "no Origin: not a browser"
    assert origin_allowed("https://App.Example/", ("https://app.example",))
    assert not origin_allowed("https://evil.example", ("https://app.example",))
    assert not origin_allowed("null", ("https://app.example",))


def test_serve_refuses_a_public_host_without_auth(capsys: pytest.CaptureFixture[str]) -> None:
    assert palabre(["serve", "--host", "0.0.0.0"], env={}) == 2
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err


# --- limits ---------------------------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    assert bucket.take(4.0, 0.0)
    assert not bucket.take(1.0, 0.0)
    assert bucket.take(1.0, 0.5)
    assert not bucket.take(1.0, 0.5)
    assert bucket.take(4.0, 100.0) and not bucket.take(0.5, 100.0), "never more than the capacity"
    assert TokenBucket(rate=0.0, capacity=0.0, now=0.0).take(1e9, 0.0), "rate 0: unlimited"


def test_audio_faster_than_the_rate_is_refused_after_the_burst() -> None:
    limits = LimitsConfig(audio_rate=16.0, audio_burst_s=30.0)
    rates = ConnectionLimits(limits, now=0.0)
    rates.audio(10**9, 0.0)  # before start the format is unknown: nothing counted
    rates.started(Start(sample_rate=16_000))  # 32000 bytes per second of audio
    second = 32_000
    now = 0.0
    for _ in range(600):  # 60 s of audio at 8x real time: always within the limit
        now += 1 / 8
        rates.audio(second, now)
    with pytest.raises(ProtocolError) as info:
        for _ in range(100):  # then as fast as possible: the 30 s burst runs out
            rates.audio(second, now)
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert info.value.close is CloseCode.POLICY_VIOLATION


def test_message_rate() -> None:
    rates = ConnectionLimits(LimitsConfig(message_rate=100.0, message_burst=10), now=0.0)
    for _ in range(10):
        rates.message(0.0)
    with pytest.raises(ProtocolError) as info:
        rates.message(0.0)
    assert info.value.code is ErrorCode.RATE_LIMITED
    rates.message(0.05)


def test_sessions_per_tenant_and_per_process() -> None:
    limits = replace(LimitsConfig(), max_sessions=4, max_sessions_per_tenant=2)
    admit_sessions(limits, "a", ["a", "b"])
    with pytest.raises(ProtocolError) as info:
        admit_sessions(limits, "a", ["a", "a", "b"])
    assert info.value.code is ErrorCode.OVERLOADED and info.value.close is CloseCode.TRY_AGAIN_LATER
    admit_sessions(limits, "c", ["a", "a", "b"])
    with pytest.raises(ProtocolError):
        admit_sessions(limits, "c", ["a", "a", "b", "b"])
    with pytest.raises(ProtocolError):
        admit_sessions(limits, "b", ["a"], count=2 + 1)
    admit_sessions(limits, "a", ["a", "a"], per_tenant=False)  # open access: one tenant, max_sessions
    admit_sessions(replace(limits, max_sessions_per_tenant=0), "a", ["a", "a", "a"])  # 0: no own cap
    with pytest.raises(ProtocolError):
        admit_sessions(limits, "a", ["a", "a", "a", "a"], per_tenant=False)


# --- palabre token ------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    parsed = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    status = run_token_command(parsed, out, err)
    return status, out.getvalue(), err.getvalue()


def test_token_cli_create_list_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    status, out, _ = run_cli("token", "create", "--data-dir", data, "--tenant", "acme", "--scope", "stream")
    assert status == 0
    token = out.splitlines()[-1]
    assert token.startswith(TOKEN_PREFIX)
    status, out, _ = run_cli(
        "token", "create", "--data-dir", data, "--tenant", "beta", "--scope", "read", "--scope", "admin"
    )
    assert status == 0
    other = out.splitlines()[-1]

    status, listing, _ = run_cli("token", "list", "--data-dir", data)
    assert status == 0
    assert token not in listing and other not in listing
    lines = listing.splitlines()
    assert lines[0].split() == ["id", "tenant", "scopes", "created", "revoked"]
    assert lines[1].split()[:3] == ["1", "acme", "stream"] and lines[1].split()[-1] == "-"
    assert lines[2].split()[:3] == ["2", "beta", "admin,read"]
    status, listing, _ = run_cli("token", "list", "--data-dir", data, "--tenant", "beta")
    assert [line.split()[0] for line in listing.splitlines()[1:]] == ["2"]

    assert run_cli("token", "revoke", "--data-dir", data, "1")[0] == 0
    status, listing, _ = run_cli("token", "list", "--data-dir", data, "--tenant", "acme")
    assert listing.splitlines()[1].split()[-1] != "-"
    status, _, err = run_cli("token", "revoke", "--data-dir", data, "99")
    assert status == 1 and "no token 99" in err

    with Store.open(tmp_path / "data" / "palabre.db") as store:
        auth = TokenAuthenticator(store.lookup_token)
        assert auth.authenticate(bearer(token), {}) is None
        principal = auth.authenticate(bearer(other), {})
        assert principal is not None and principal.tenant_id == "beta"


def test_token_cli_refuses_bad_tenants_and_missing_databases(tmp_path: Path) -> None:
    status, _, err = run_cli(
        "token", "create", "--data-dir", str(tmp_path), "--tenant", "../etc", "--scope", "read"
    )
    assert status == 2 and "--tenant" in err
    status, _, err = run_cli("token", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert status == 2 and "no database" in err


def test_token_bucket_wait_runs_into_debt_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    assert bucket.wait(3.0, 0.0) == 0.0
    assert bucket.wait(3.0, 0.0) == pytest.approx(1.0)  # 2 tokens short at 2 per second
    assert bucket.wait(1.0, 1.0) == pytest.approx(0.5)  # the debt was paid at 1.0; 1 more is short
    assert TokenBucket(rate=0.0, capacity=0.0, now=0.0).wait(1e9, 0.0) == 0.0


def test_audio_faster_than_the_rate_is_paced_with_the_pace_policy() -> None:
    limits = LimitsConfig(audio_rate=2.0, audio_burst_s=1.0, audio_rate_policy="pace")
    rates = ConnectionLimits(limits, now=0.0)
    rates.started(Start(sample_rate=16_000))
    second = 32_000
    assert rates.audio(second, 0.0) == 0.0  # the burst
    assert rates.audio(second, 0.0) == pytest.approx(0.5)  # 1 s of audio at 2x: half a second
    with pytest.raises(ProtocolError):  # a transport that cannot pace (RTP) refuses instead
        rates.audio(second, 0.0, can_pace=False)


def test_the_audio_rate_of_a_connection_counts_every_stream_it_carries() -> None:
    rates = ConnectionLimits(LimitsConfig(audio_rate=1.0, audio_burst_s=1.0), now=0.0)
    for _ in range(2):  # a Twilio call's two tracks: 8000 μ-law bytes per second each
        rates.started(Start(sample_rate=8000, encoding="mulaw"))
    now = 0.0
    for _ in range(100):  # both tracks at real time: within a 1x rate for the connection
        now += 0.02
        assert rates.audio(160, now) == 0.0
        assert rates.audio(160, now) == 0.0
    fast_from = now
    with pytest.raises(ProtocolError) as info:
        for _ in range(200):  # both at 2x real time: the connection at 2x drains its 1 s burst in ~1 s
            now += 0.01
            rates.audio(160, now)
            rates.audio(160, now)
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert 0.9 < now - fast_from < 1.1, f"tripped after {now - fast_from:.2f} s at 2x"


def test_palabre_purge_erase_tenant_set_and_audit_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.store import Store

    with Store.open(ServerConfig(data_dir=tmp_path).database_path) as store:
        for cid in ("a", "b", "c"):
            store.open_conversation("acme", cid, "en")
            store.add_utterance("acme", cid, 0, f"secret {cid}", 0, 1, "en")
    data = ["--data-dir", str(tmp_path)]
    assert palabre(["purge", *data, "--before", "2000-01-01"]) == 0
    assert "purged 0 conversations" in capsys.readouterr().out
    assert palabre(["erase", *data, "--conversation", "a"]) == 0
    assert palabre(["erase", *data, "--conversation", "a"]) == 1
    assert palabre(["tenant", "set", "acme", *data, "--retention-days", "30"]) == 0
    assert palabre(["purge", *data, "--before", "2100-01-01T00:00", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "purged 2 conversations" in out and "30 days" in out
    assert palabre(["audit", *data]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["conversation_id"], r["actor"]) for r in rows] == [
        ("purge", "c", "cli"),
        ("purge", "b", "cli"),
        ("erase", "a", "cli"),
    ]
    assert "secret" not in json.dumps(rows)
    with Store.open(ServerConfig(data_dir=tmp_path).database_path) as store:
        assert store.list_conversations("acme") == [] and store.retention() == {"acme": 30}
