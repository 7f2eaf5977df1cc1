"""Configuration: the defaults from RFC 5321 / Postfix, and a ValueError for anything below an RFC minimum."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from smtpcore import (
    AuthPolicy,
    BareNewlinePolicy,
    ClientConfig,
    LongLinePolicy,
    ServerConfig,
    Timeout,
    TlsPolicy,
)
from smtpcore._sasl_server import CramMd5


def test_server_defaults() -> None:
    config = ServerConfig()
    assert config.hostname == "localhost"
    assert config.lmtp is False
    # Extensions.
    assert config.pipelining
    assert config.eight_bit_mime
    assert config.enhanced_status_codes
    assert config.smtputf8
    assert config.chunking
    assert config.binarymime
    assert config.dsn is False
    assert config.requiretls is False
    assert config.extra_extensions == ()
    assert config.extra_parameters == frozenset()
    # TLS and AUTH: off by default, and never AUTH in the clear unless asked.
    assert config.tls is TlsPolicy.OFF
    assert config.implicit_tls is False
    assert config.auth is AuthPolicy.OFF
    assert config.auth_mechanisms == ("PLAIN", "LOGIN")
    assert config.allow_insecure_auth is False
    # Limits (shared/PROTOCOL-NOTES.md).
    assert config.max_command_line == 512
    assert config.max_auth_line == 12288
    assert config.max_line_length == 1000
    assert config.long_lines is LongLinePolicy.REJECT
    assert config.bare_newlines is BareNewlinePolicy.REJECT
    assert config.max_message_size == 10 * 1024 * 1024
    assert config.max_recipients == 1000
    assert config.max_errors == 20
    assert config.max_junk_commands == 100  # Postfix's smtpd_junk_command_limit
    assert config.error_delay == 0.0  # no tarpit unless asked (Postfix: 1 s)
    assert config.error_delay_after == 10  # Postfix's smtpd_soft_error_limit
    assert config.reject_early_talkers is True
    assert config.greet_delay == 0.0
    assert config.reject_improper_pipelining is False
    assert config.vrfy_enabled is False
    assert config.expn_enabled is False
    # Timeouts (RFC 5321 §4.5.3.2: at least 5 minutes for a server).
    assert config.command_timeout == 300.0
    assert config.data_timeout == 300.0
    assert config.min_data_rate == 500.0


def test_server_config_is_frozen() -> None:
    config = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_recipients = 5  # type: ignore[misc]
    assert dataclasses.replace(config, max_recipients=200).max_recipients == 200


def test_configs_key_a_cache() -> None:
    # Frozen, so hashable: equal configs hash alike, their mappings (factories, timeouts) left out.
    assert hash(ServerConfig(hostname="mx.example")) == hash(ServerConfig(hostname="mx.example"))
    assert {ServerConfig(), ServerConfig(auth_mechanism_factories={})} == {ServerConfig()}
    assert len({ClientConfig(timeouts={"mail": 60.0}), ClientConfig()}) == 2
    assert {ClientConfig(), ClientConfig()} == {ClientConfig()}


@pytest.mark.parametrize(
    ("name", "lowest"),
    [
        ("max_recipients", 100),  # RFC 5321 §4.5.3.1.8
        ("max_command_line", 512),  # §4.5.3.1.4
        ("max_line_length", 1000),  # §4.5.3.1.6
        ("max_message_size", 65536),  # §4.5.3.1.10
        ("max_errors", 1),
        ("max_junk_commands", 1),
        ("error_delay_after", 1),
    ],
)
def test_server_minimums(name: str, lowest: int) -> None:
    assert getattr(ServerConfig(**cast("dict[str, Any]", {name: lowest})), name) == lowest
    assert getattr(ServerConfig(**cast("dict[str, Any]", {name: lowest * 10})), name) == lowest * 10
    for below in (lowest - 1, 0 if lowest > 1 and name != "max_message_size" else -1, -(10**6)):
        with pytest.raises(ValueError, match=name):
            ServerConfig(**cast("dict[str, Any]", {name: below}))


@pytest.mark.parametrize("seconds", [-0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["error_delay", "greet_delay"])
def test_delays_are_a_number_of_seconds(name: str, seconds: float) -> None:
    with pytest.raises(ValueError, match=name):
        ServerConfig(**cast("dict[str, Any]", {name: seconds}))
    assert getattr(ServerConfig(**cast("dict[str, Any]", {name: 0.25})), name) == 0.25


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["command_timeout", "data_timeout", "tls_handshake_timeout"])
def test_timeouts_are_more_than_zero_seconds(name: str, seconds: float) -> None:
    # 0 would end every session at its first read (421), before a client could say a word.
    with pytest.raises(ValueError, match=name):
        ServerConfig(**cast("dict[str, Any]", {name: seconds}))
    assert getattr(ServerConfig(**cast("dict[str, Any]", {name: 0.25})), name) == 0.25


def test_message_size_zero_means_unlimited() -> None:
    assert ServerConfig(max_message_size=0).max_message_size == 0
    for bad in (1, 65535, -1):
        with pytest.raises(ValueError, match="max_message_size"):
            ServerConfig(max_message_size=bad)


def test_auth_line_at_least_command_line() -> None:
    assert ServerConfig(max_command_line=1000, max_auth_line=1000).max_auth_line == 1000
    with pytest.raises(ValueError, match="max_auth_line"):
        ServerConfig(max_command_line=1000, max_auth_line=999)
    with pytest.raises(ValueError, match="max_auth_line"):
        ServerConfig(max_auth_line=511)


def test_server_never_normalises_content() -> None:
    assert ServerConfig(bare_newlines=BareNewlinePolicy.ACCEPT).bare_newlines is BareNewlinePolicy.ACCEPT
    with pytest.raises(ValueError, match="bare_newlines"):
        ServerConfig(bare_newlines=BareNewlinePolicy.NORMALISE)


@pytest.mark.parametrize(
    "hostname",
    ["", "bad host", "a..b", "host.", "-host", "host\r\n", "host\n", "ho\x00st", "bücher.example", "[1.2.3]"],
)
def test_bad_hostname(hostname: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        ServerConfig(hostname=hostname)
    with pytest.raises(ValueError, match="hostname"):
        ClientConfig(local_hostname=hostname)


@pytest.mark.parametrize("hostname", ["mx.example.com", "localhost", "[192.0.2.1]", "[IPv6:::1]"])
def test_good_hostname(hostname: str) -> None:
    assert ServerConfig(hostname=hostname).hostname == hostname
    assert ClientConfig(local_hostname=hostname).local_hostname == hostname


@pytest.mark.parametrize("line", ["", "FOO\r\nBAR", "FOO\n", "FOO\x00", "FÖO", "FOO\t1", "\x7f"])
def test_bad_extra_extension(line: Any) -> None:
    # An EHLO line with a CR or LF in it would forge more reply lines.
    with pytest.raises(ValueError, match="extra_extensions"):
        ServerConfig(extra_extensions=(line,))


def test_extra_extension_not_a_string() -> None:
    with pytest.raises(ValueError, match="extra_extensions"):
        ServerConfig(extra_extensions=(b"FOO",))  # type: ignore[arg-type]


def test_good_extra_extensions() -> None:
    assert ServerConfig(extra_extensions=("MT-PRIORITY", "DELIVERBY 60")).extra_extensions == (
        "MT-PRIORITY",
        "DELIVERBY 60",
    )


@pytest.mark.parametrize("keyword", ["xfoo", "XFoo", "", "X FOO", "X=1", "-X", "X\r\n", "XÖ"])
def test_bad_extra_parameter(keyword: str) -> None:
    # The parser upper-cases what the client sends: a lower-case entry here
    # would never match, and the parameter would be refused with 555 silently.
    with pytest.raises(ValueError, match="extra_parameters"):
        ServerConfig(extra_parameters=frozenset({keyword}))


def test_good_extra_parameters() -> None:
    assert ServerConfig(extra_parameters=frozenset({"XFOO", "X-BAR-2"})).extra_parameters == {"XFOO", "X-BAR-2"}


def test_auth_mechanisms_checked() -> None:
    assert ServerConfig(auth_mechanisms=("PLAIN",)).auth_mechanisms == ("PLAIN",)
    with pytest.raises(ValueError, match="upper case"):
        ServerConfig(auth_mechanisms=("plain",))
    with pytest.raises(ValueError, match="no built-in"):
        ServerConfig(auth_mechanisms=("SCRAM-SHA-256",))
    # An application's own mechanism is fine when it brings a factory.
    config = ServerConfig(auth_mechanisms=("X-MINE",), auth_mechanism_factories={"X-MINE": CramMd5})
    assert config.auth_mechanisms == ("X-MINE",)


def test_builtin_mechanisms_all_accepted() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"))
    assert len(config.auth_mechanisms) == 4


def test_policies_are_enums_with_values() -> None:
    assert {policy.value for policy in TlsPolicy} == {"off", "optional", "required"}
    assert {policy.value for policy in AuthPolicy} == {"off", "optional", "required"}
    assert {policy.value for policy in BareNewlinePolicy} == {"reject", "accept", "normalise"}
    assert {policy.value for policy in LongLinePolicy} == {"reject", "accept"}


def test_a_policy_given_as_its_value_becomes_the_member_and_anything_else_is_refused() -> None:
    # Tested by identity in the machine: tls="required" once advertised STARTTLS and accepted
    # MAIL in plaintext, auth="required" accepted MAIL with no login.
    config = ServerConfig(tls="required", auth="Required", long_lines="accept", bare_newlines="reject")  # type: ignore[arg-type]
    assert (config.tls, config.auth) == (TlsPolicy.REQUIRED, AuthPolicy.REQUIRED)
    assert (config.long_lines, config.bare_newlines) == (LongLinePolicy.ACCEPT, BareNewlinePolicy.REJECT)
    assert ClientConfig(starttls="off").starttls is TlsPolicy.OFF  # type: ignore[arg-type]
    for bad in ({"tls": "yes"}, {"auth": True}, {"long_lines": 1}):
        with pytest.raises(ValueError, match="must be one of"):
            ServerConfig(**bad)
    with pytest.raises(ValueError, match="must be one of"):
        ClientConfig(starttls="tls")  # type: ignore[arg-type]


def test_auth_set_ups_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one mechanism"):
        ServerConfig(auth=AuthPolicy.OPTIONAL, auth_mechanisms=(), allow_insecure_auth=True)  # "250 AUTH " alone
    with pytest.raises(ValueError, match="needs TLS"):
        ServerConfig(auth=AuthPolicy.REQUIRED)  # never offered, so every MAIL would get 530
    ServerConfig(auth=AuthPolicy.REQUIRED, tls=TlsPolicy.OPTIONAL)
    ServerConfig(auth=AuthPolicy.REQUIRED, implicit_tls=True)
    ServerConfig(auth=AuthPolicy.REQUIRED, allow_insecure_auth=True)
    ServerConfig(auth=AuthPolicy.OFF, auth_mechanisms=())


def test_a_proxy_header_before_implicit_tls_is_a_set_up_we_take() -> None:
    # HAProxy, an AWS NLB and nginx send the header in plaintext, then the client's
    # handshake: the header is read first, then the handshake is made (see max_read).
    config = ServerConfig(proxy_protocol=True, implicit_tls=True)
    assert config.proxy_protocol and config.implicit_tls
    ServerConfig(proxy_protocol=True, tls=TlsPolicy.OPTIONAL)  # STARTTLS after the header is fine too


def test_timeout_value() -> None:
    timeout = Timeout("data", 300.0, "RFC 5321 §4.5.3.2.6", min_rate=500.0)
    assert timeout.name == "data"
    assert timeout.seconds == 300.0
    assert timeout.min_rate == 500.0
    assert Timeout("command", 300.0, "RFC 5321 §4.5.3.2.7").min_rate is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        timeout.seconds = 1  # type: ignore[misc]


# --- ClientConfig: only its RFC minimums here (the client's own tests cover the rest) --------------


def test_client_reply_line_minimum() -> None:
    assert ClientConfig(max_reply_line=512).max_reply_line == 512
    with pytest.raises(ValueError, match="max_reply_line"):
        ClientConfig(max_reply_line=511)


def test_client_chunk_size_positive() -> None:
    assert ClientConfig(chunk_size=1).chunk_size == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunk_size"):
            ClientConfig(chunk_size=bad)


def test_8bitmime_off_needs_smtputf8_and_binarymime_off() -> None:
    # RFC 6531 §3.1: SMTPUTF8 needs 8BITMIME; BODY=BINARYMIME is 8BITMIME's BODY parameter,
    # so advertising BINARYMIME without it gave 555 to the very parameter it announces.
    with pytest.raises(ValueError, match="smtputf8=False and binarymime=False"):
        ServerConfig(eight_bit_mime=False)
    with pytest.raises(ValueError, match="eight_bit_mime"):
        ServerConfig(eight_bit_mime=False, smtputf8=False)
    ServerConfig(eight_bit_mime=False, smtputf8=False, binarymime=False)
    ServerConfig(eight_bit_mime=False, smtputf8=False, chunking=False)  # BINARYMIME needs CHUNKING too
