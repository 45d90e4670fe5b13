"""The exporter-toolkit web config: validation, TLS contexts and basic auth."""

from __future__ import annotations

import base64
import os
import ssl
import textwrap
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import trustme

from modelarts_exporter.config import ConfigError
from modelarts_exporter.webconfig import WebConfig, load_web_config

PASSWORD = "s3cret-Pass!"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def write(text: str) -> Path:
        path = tmp_path / "web.yml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> Path:
    """server.crt, server.key, ca.crt, and other.key (not the server's) in tmp_path/tls."""
    tls = tmp_path / "tls"
    tls.mkdir()
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(str(tls / "server.crt"))
    server.private_key_pem.write_to_path(str(tls / "server.key"))
    ca.cert_pem.write_to_path(str(tls / "ca.crt"))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(tls / "other.key"))
    return tls


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    return info.value.problems


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- loading -------------------------------------------------------------------------------


def test_full_file(write: Write, certs: Path) -> None:
    path = write(
        f"""\
        tls_server_config:
          cert_file: tls/server.crt
          key_file: {certs / "server.key"}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: tls/ca.crt
          min_version: TLS12
          max_version: TLS13
        basic_auth_users:
          alice: {HASH}
          bob: {HASH.replace("$2b$", "$2y$", 1)}
        http_server_config:
          headers:
            Strict-Transport-Security: max-age=31536000
            X-Frame-Options: deny
          http2: false
        """
    )
    web = load_web_config(path)

    assert web.tls_server_config is not None
    assert web.tls_server_config.cert_file == certs / "server.crt"
    assert web.tls_server_config.key_file == certs / "server.key"
    assert web.tls_server_config.client_ca_file == certs / "ca.crt"
    assert set(web.basic_auth_users) == {"alice", "bob"}
    assert web.headers == {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Frame-Options": "deny",
    }


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}\n"])
def test_empty_file_means_plain_http_without_auth(write: Write, text: str) -> None:
    web = load_web_config(write(text))
    assert web.ssl_context() is None
    assert web.check_basic_auth(None)
    assert web.headers == {}


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    assert problems_of(path) == [f"{path}: file not found"]


def test_unknown_keys(write: Write) -> None:
    path = write(
        """\
        tls_config: {}
        http_server_config: {headers: {}, http3: true}
        """
    )
    assert problems_of(path) == [
        f"{path}: http_server_config.http3: unknown key (valid keys: headers, http2)",
        f"{path}: tls_config: unknown key (valid keys: tls_server_config, basic_auth_users, "
        "http_server_config)",
    ]


def test_missing_and_unreadable_files(write: Write, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    path = write(
        """\
        tls_server_config:
          cert_file: nope.crt
          key_file: tls
          client_auth_type: VerifyClientCertIfGiven
          client_ca_file: /nonexistent/ca.crt
        """
    )
    assert problems_of(path) == [
        f"{path}: tls_server_config.cert_file: cannot read {tmp_path / 'nope.crt'}: "
        "No such file or directory",
        f"{path}: tls_server_config.client_ca_file: cannot read /nonexistent/ca.crt: "
        "No such file or directory",
        f"{path}: tls_server_config.key_file: cannot read {tmp_path / 'tls'}: Is a directory",
    ]


def test_cert_and_key_required(write: Write) -> None:
    path = write("tls_server_config: {}\n")
    assert problems_of(path) == [
        f"{path}: tls_server_config.cert_file: Field required",
        f"{path}: tls_server_config.key_file: Field required",
    ]


def test_key_not_matching_the_certificate(write: Write, certs: Path) -> None:
    path = write("tls_server_config: {cert_file: tls/server.crt, key_file: tls/other.key}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: tls_server_config.key_file: cannot use cert_file with ")
    assert "_ssl.c" not in problem


@pytest.mark.parametrize(
    ("options", "key", "reason"),
    [
        ("client_auth_type: RequireAndVerifyClientCert", "client_ca_file", "required with"),
        ("client_auth_type: RequestClientCert", "client_ca_file", "required with"),
        ("client_ca_file: tls/ca.crt", "client_ca_file", "client_auth_type is NoClientCert"),
        ("client_auth_type: Sometimes", "client_auth_type", "Input should be 'NoClientCert'"),
        ("min_version: TLS10", "min_version", "Input should be 'TLS12' or 'TLS13'"),
        ("{min_version: TLS13, max_version: TLS12}", "max_version", "not be lower"),
    ],
)
def test_tls_option_problems(
    write: Write, certs: Path, options: str, key: str, reason: str
) -> None:
    if not options.startswith("{"):
        options = "{" + options + "}"
    block = options[1:-1]
    path = write(
        f"tls_server_config: {{cert_file: tls/server.crt, key_file: tls/server.key, {block}}}\n"
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: tls_server_config.{key}: ")
    assert reason in problem


def test_bad_hashes_and_users(write: Write) -> None:
    path = write(
        f"""\
        basic_auth_users:
          plain: {PASSWORD}
          md5: $1$abc$0123456789012345678901
          short: {HASH[:-1]}
          cut: "$2b$12$abcdefghijklmnopqrstuv"
          "": {HASH}
        """
    )
    problems = problems_of(path)
    cut = (
        "is not a whole bcrypt hash: {} characters where a bcrypt hash has 60 ($2b$12$, "
        "then 22 of salt and 31 of hash from [./A-Za-z0-9]); was it cut when copied?"
    )
    assert problems == [
        f'{path}: basic_auth_users."": invalid key: String should have at least 1 character',
        f"{path}: basic_auth_users.cut: {cut.format(29)}",
        f"{path}: basic_auth_users.md5: must be a bcrypt hash starting with $2a$, $2b$ or $2y$",
        f"{path}: basic_auth_users.plain: must be a bcrypt hash starting with $2a$, $2b$ or $2y$",
        f"{path}: basic_auth_users.short: {cut.format(59)}",
    ]
    assert PASSWORD not in "\n".join(problems)


def test_bad_headers(write: Write) -> None:
    path = write(
        "http_server_config: {headers: "
        '{"Bad Name": x, X-Frame-Options: "a\\r\\nSet-Cookie: x", Content-Type: text/html}}\n'
    )
    assert problems_of(path) == [
        f"{path}: http_server_config.headers.Bad Name: invalid key: not a valid HTTP header name",
        f"{path}: http_server_config.headers.Content-Type: invalid key: not one of the headers "
        "a web config may set: Strict-Transport-Security, X-Content-Type-Options, "
        "X-Frame-Options, X-XSS-Protection, Content-Security-Policy",
        f"{path}: http_server_config.headers.X-Frame-Options: HTTP header values must not "
        "contain control characters",
    ]


# --- TLS -----------------------------------------------------------------------------------


def _step(side: ssl.SSLObject) -> bool:
    try:
        side.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """A full TLS handshake in memory; raises the SSLError of the side that refuses."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        client_done = client_done or _step(client)
        server_in.write(client_out.read())
        server_done = server_done or _step(server)
        client_in.write(server_out.read())
        if client_done and server_done:
            return
    raise AssertionError("the handshake did not finish")


def test_ssl_context_serves_tls(write: Write, certs: Path, ca: trustme.CA) -> None:
    web = load_web_config(
        write("tls_server_config: {cert_file: tls/server.crt, key_file: tls/server.key}\n")
    )
    context = web.ssl_context()

    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert context.verify_mode == ssl.CERT_NONE
    client = ssl.create_default_context()
    ca.configure_trust(client)
    handshake(context, client)


def test_ssl_context_versions(write: Write, certs: Path) -> None:
    web = load_web_config(
        write(
            "tls_server_config: {cert_file: tls/server.crt, key_file: tls/server.key,"
            " min_version: TLS13, max_version: TLS13}\n"
        )
    )
    context = web.ssl_context()
    assert context is not None
    assert context.minimum_version == context.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("client_auth_type", "mode"),
    [
        ("RequestClientCert", ssl.CERT_OPTIONAL),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_certificates(
    write: Write, certs: Path, ca: trustme.CA, client_auth_type: str, mode: ssl.VerifyMode
) -> None:
    web = load_web_config(
        write(
            "tls_server_config: {cert_file: tls/server.crt, key_file: tls/server.key,"
            f" client_auth_type: {client_auth_type}, client_ca_file: tls/ca.crt}}\n"
        )
    )
    context = web.ssl_context()
    assert context is not None
    assert context.verify_mode == mode

    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("client@example.com").configure_cert(with_cert)
    handshake(context, with_cert)

    without_cert = ssl.create_default_context()
    ca.configure_trust(without_cert)
    if mode == ssl.CERT_REQUIRED:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE"):
            handshake(context, without_cert)
    else:
        handshake(context, without_cert)

    stranger = ssl.create_default_context()
    ca.configure_trust(stranger)
    trustme.CA().issue_cert("client@example.com").configure_cert(stranger)
    with pytest.raises(ssl.SSLError):
        handshake(context, stranger)


def test_ssl_context_reports_files_changed_after_loading(write: Write, certs: Path) -> None:
    path = write("tls_server_config: {cert_file: tls/server.crt, key_file: tls/server.key}\n")
    web = load_web_config(path)
    (certs / "server.key").write_text("not a key")
    with pytest.raises(ConfigError) as info:
        web.ssl_context()
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: tls_server_config.key_file: cannot use cert_file with ")


# --- basic auth ----------------------------------------------------------------------------


@pytest.fixture
def users(write: Write) -> WebConfig:
    return load_web_config(write(f"basic_auth_users: {{alice: '{HASH}'}}\n"))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        basic("alice", "wrong"),
        basic("alice", PASSWORD + "x"),
        basic("mallory", PASSWORD),
        basic("alice", "x" * 100),
    ],
)
def test_basic_auth_refuses(users: WebConfig, header: str | None) -> None:
    assert not users.check_basic_auth(header)


def test_basic_auth_accepts(users: WebConfig) -> None:
    assert users.check_basic_auth(basic("alice", PASSWORD))
    assert users.check_basic_auth("basic  " + basic("alice", PASSWORD).split()[1])


def test_passwords_with_colons(write: Write) -> None:
    hashed = bcrypt.hashpw(b"a:b:c", bcrypt.gensalt(rounds=4)).decode()
    web = load_web_config(write(f"basic_auth_users: {{u: '{hashed}'}}\n"))
    assert web.check_basic_auth(basic("u", "a:b:c"))


def test_verified_passwords_are_cached(users: WebConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)

    for _ in range(3):
        assert users.check_basic_auth(basic("alice", PASSWORD))
    assert len(calls) == 1

    assert not users.check_basic_auth(basic("alice", "wrong"))
    assert not users.check_basic_auth(basic("alice", "wrong"))
    assert len(calls) == 3  # failures are never cached

    assert not users.check_basic_auth(basic("nobody", PASSWORD))
    assert len(calls) == 4  # an unknown user costs a bcrypt too
    assert users.check_basic_auth(basic("alice", PASSWORD))
    assert len(calls) == 4


@pytest.mark.parametrize("costs", [(4,), (4, 6), (6, 4, 5)])
def test_an_unknown_user_costs_a_bcrypt_of_the_users_cost(
    write: Write, monkeypatch: pytest.MonkeyPatch, costs: tuple[int, ...]
) -> None:
    """Timing must not tell which users exist: an unknown name is checked against a dummy
    hash as slow as the slowest configured one (not a fixed cost-10 hash, 4x faster than
    a cost-12 one, 64x slower than a cost-4 one)."""
    lines = "".join(
        f"  user{n}: '{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=cost)).decode()}'\n"
        for n, cost in enumerate(costs)
    )
    web = load_web_config(write(f"basic_auth_users:\n{lines}"))
    checked: list[bytes] = []
    checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    assert not web.check_basic_auth(basic("nobody", "pw"))
    assert not web.check_basic_auth(basic("user0", "wrong"))
    [unknown, known] = checked
    assert unknown.startswith(f"$2b${max(costs):02d}$".encode())
    assert known.startswith(f"$2b${costs[0]:02d}$".encode())
    assert unknown not in {hashed.encode() for hashed in web.basic_auth_users.values()}


def test_password_never_in_repr(users: WebConfig) -> None:
    users.check_basic_auth(basic("alice", PASSWORD))
    assert PASSWORD not in repr(users)
    assert PASSWORD not in str(users)


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    first = ca.issue_cert("127.0.0.1")
    first.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    first.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config: {cert_file: tls.crt, key_file: tls.key}\n")
    provider = load_web_config(path).ssl_context_provider()
    assert provider is not None
    before = provider()
    assert provider() is before  # unchanged files: the same context
    renewed = ca.issue_cert("127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    renewed.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    stamp = os.stat(tmp_path / "tls.crt").st_mtime + 10
    os.utime(tmp_path / "tls.crt", (stamp, stamp))
    after = provider()
    assert after is not before
    (tmp_path / "tls.key").write_text("broken")
    os.utime(tmp_path / "tls.key", (stamp + 10, stamp + 10))
    assert provider() is after  # unusable files: the last good context stays
