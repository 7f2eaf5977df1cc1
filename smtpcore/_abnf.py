"""The RFC grammar smtpcore parses and produces, as regular expressions.

Each rule quotes the RFC text it comes from, so a reviewer can compare the two.
Rules are built as strings and compiled once at import; every parser in the
package matches against these, and nothing "repairs" input that fails them.

RFC 6531 (SMTPUTF8) extends several rules with ``UTF8-non-ascii``; where it does,
there are two compiled variants, one for ASCII-only sessions and one that also
admits UTF-8.  Strings here are ``str`` patterns: command lines are decoded
(strictly, as UTF-8) before they are parsed, so a non-UTF-8 byte never reaches
a rule.
"""

from __future__ import annotations

import re

# The characters of CONTROL_RE (below) above U+007F, as a regex class's contents.
_NON_ASCII_CONTROLS = "\\x80-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"


def _or_non_ascii(ascii_class: str) -> str:
    """A character class: the ASCII characters of ``[ascii_class]``, or UTF8-non-ascii.

    RFC 6531 §3.3: UTF8-non-ascii = UTF8-2 / UTF8-3 / UTF8-4; after decoding,
    any code point above U+007F.  The class is written as the ASCII characters it
    leaves out (``[^...]``), not as the ASCII ones plus the range U+0080 to
    U+10FFFF, which matches the same characters: ``re`` compiles a class that
    holds that range by visiting its 65,000 BMP code points one at a time, 3 ms
    a class, which was half of the time ``import smtpcore`` took.

    The characters of CONTROL_RE above U+007F are left out too: the ABNF admits
    them, but they are controls, line breaks and bidi overrides, not text.
    """
    inside = re.compile(f"[{ascii_class}]")
    left_out = "".join(f"\\x{code:02x}" for code in range(0x80) if not inside.fullmatch(chr(code)))
    return f"[^{left_out}{_NON_ASCII_CONTROLS}]"


# RFC 5321 §4.1.2 / RFC 5322 §3.2.3:
#   atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
#           "/" / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
#   Atom = 1*atext ;  Dot-string = Atom *("." Atom)
DOT_STRING = rf"[{ATEXT}]+(?:\.[{ATEXT}]+)*"
ATEXT_UTF8 = _or_non_ascii(ATEXT)
DOT_STRING_UTF8 = rf"{ATEXT_UTF8}+(?:\.{ATEXT_UTF8}+)*"
#   Quoted-string = DQUOTE *QcontentSMTP DQUOTE
#   QcontentSMTP = qtextSMTP / quoted-pairSMTP
#   quoted-pairSMTP = %d92 %d32-126 ; backslash followed by any ASCII graphic or space
#   qtextSMTP = %d32-33 / %d35-91 / %d93-126
QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
QTEXT_UTF8 = _or_non_ascii(r"\x20\x21\x23-\x5b\x5d-\x7e")
QUOTED_STRING_UTF8 = rf'"(?:{QTEXT_UTF8}|\\[\x20-\x7e])*"'
#   Local-part = Dot-string / Quoted-string
LOCAL_PART = rf"(?:{DOT_STRING}|{QUOTED_STRING})"
LOCAL_PART_UTF8 = rf"(?:{DOT_STRING_UTF8}|{QUOTED_STRING_UTF8})"

#   sub-domain = Let-dig [Ldh-str] ; Let-dig = ALPHA / DIGIT
#   Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
SUB_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
# RFC 6531 §3.3: sub-domain =/ U-label.  We admit any non-ASCII letter position
# and leave IDNA validity to the application (the stdlib idna codec is IDNA 2003).
LET_DIG_UTF8 = _or_non_ascii("A-Za-z0-9")
LDH_UTF8 = _or_non_ascii(r"A-Za-z0-9\-")
SUB_DOMAIN_UTF8 = rf"{LET_DIG_UTF8}(?:{LDH_UTF8}*{LET_DIG_UTF8})?"
#   Domain = sub-domain *("." sub-domain)
DOMAIN = rf"{SUB_DOMAIN}(?:\.{SUB_DOMAIN})*"
DOMAIN_UTF8 = rf"{SUB_DOMAIN_UTF8}(?:\.{SUB_DOMAIN_UTF8})*"
#   address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
#                           General-address-literal ) "]"
#   General-address-literal = Standardized-tag ":" 1*dcontent
#   dcontent = %d33-90 / %d94-126
# The inside is checked further by ``_address.check_address_literal`` (with the
# stdlib ``ipaddress`` module): a regex for IPv6 would be unreadable.
ADDRESS_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"

#   Mailbox = Local-part "@" ( Domain / address-literal )
MAILBOX = rf"(?P<local>{LOCAL_PART})@(?P<domain>{DOMAIN}|{ADDRESS_LITERAL})"
MAILBOX_UTF8 = rf"(?P<local>{LOCAL_PART_UTF8})@(?P<domain>{DOMAIN_UTF8}|{ADDRESS_LITERAL})"
#   Path = "<" [ A-d-l ":" ] Mailbox ">" ; A-d-l = At-domain *( "," At-domain )
#   At-domain = "@" Domain
# RFC 5321 §4.1.1.3 and appendix C: a source route must be accepted and ignored.
ADL = rf"@{DOMAIN}(?:,@{DOMAIN})*:"
ADL_UTF8 = rf"@{DOMAIN_UTF8}(?:,@{DOMAIN_UTF8})*:"

# Not RFC 5321: a local part of atext with its dots anywhere ("a..b", "docomo.",
# ".x").  Such addresses exist (old Japanese mobile-carrier ones are the known
# case) and Postfix and aiosmtpd take them; the server reads a path with this only
# when the grammar refused it, and hands the local part on quoted (see
# _address.parse_path), which is the same mailbox in RFC 5321's syntax.
LAX_LOCAL_PART = rf"[{ATEXT}.]+"
LAX_LOCAL_PART_UTF8 = _or_non_ascii(ATEXT + ".") + "+"
LAX_PATH_RE = re.compile(rf"<(?:{ADL})?(?P<local>{LAX_LOCAL_PART})@(?P<domain>{DOMAIN}|{ADDRESS_LITERAL})>")
LAX_PATH_UTF8_RE = re.compile(
    rf"<(?:{ADL_UTF8})?(?P<local>{LAX_LOCAL_PART_UTF8})@(?P<domain>{DOMAIN_UTF8}|{ADDRESS_LITERAL})>"
)

MAILBOX_RE = re.compile(MAILBOX)
MAILBOX_UTF8_RE = re.compile(MAILBOX_UTF8)
PATH_RE = re.compile(rf"<(?:{ADL})?{MAILBOX}>")
PATH_UTF8_RE = re.compile(rf"<(?:{ADL_UTF8})?{MAILBOX_UTF8}>")
DOMAIN_RE = re.compile(DOMAIN)
DOMAIN_UTF8_RE = re.compile(DOMAIN_UTF8)
ADDRESS_LITERAL_RE = re.compile(ADDRESS_LITERAL)

#   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
ESMTP_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
#   esmtp-value = 1*(%d33-60 / %d62-126) ; any CHAR excluding "=", SP, and controls
#   RFC 6531 §3.3: esmtp-value =/ UTF8-non-ascii
ESMTP_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
ESMTP_VALUE_UTF8_RE = re.compile(_or_non_ascii(r"\x21-\x3c\x3e-\x7e") + "+")

#   ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")      (RFC 5321 §4.1.1.1)
#   ehlo-param = 1*(%d33-126) ; any CHAR excluding <SP> and all control characters
EHLO_LINE_RE = re.compile(r"(?P<keyword>[A-Za-z0-9][A-Za-z0-9\-]*)(?P<params>(?: +[\x21-\x7e]+)*) *")

#   String = Atom / Quoted-string    (the argument of VRFY, EXPN, HELP, NOOP)
STRING_RE = re.compile(rf"[{ATEXT}]+|{QUOTED_STRING}")
STRING_UTF8_RE = re.compile(rf"{ATEXT_UTF8}+|{QUOTED_STRING_UTF8}")

# Control characters: C0, DEL and C1 (Unicode category Cc); the line and
# paragraph separators U+2028 and U+2029, which str.splitlines() and many log
# readers take for line breaks; and the bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069), which make text read in another order than it
# is ("Trojan Source"; IDNA 2008 disallows them in domain names).  None belongs
# in a command line, a name or an address, UTF-8 or not: "EHLO mail\u0085x"
# would split a log line, and C1's U+009B starts a terminal escape sequence.
CONTROL_RE = re.compile(f"[\x00-\x1f\x7f{_NON_ASCII_CONTROLS}]")

# A host name with underscores, as Windows machines send their NetBIOS names
# ("EHLO DESKTOP_7QX2") and reverse lookups may return: no domain by RFC 5321's
# grammar, but Postfix, aiosmtpd and go-smtp take it, and refusing it would only
# keep those clients out.  The grammar of a domain, with "_" as a letter.
UNDERSCORED_NAME_RE = re.compile(r"[A-Za-z0-9_]+(?:-+[A-Za-z0-9_]+)*(?:\.[A-Za-z0-9_]+(?:-+[A-Za-z0-9_]+)*)*\.?")

# Numbers in the protocol (SIZE=, BDAT n, LIMITS, priorities) are ASCII digits
# only, with a bounded length: int() would also take "2_5", " 25", "+25" and
# non-ASCII digits, and an unbounded run of digits is a denial of service.
NUMBER_RE = re.compile(r"[0-9]{1,20}")

# RFC 3461 §4: xtext = *( xchar / hexchar )
#   xchar = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except "+" and "=".
#   hexchar = "+" 2(%x30-39 / %x41-46) ; "+" followed by two upper-case hex digits
# Lower-case hex digits are taken too, as Postfix's xtext_unquote takes them: a
# 501 to MAIL for "+2b" would cost the whole message over the case of a digit.
XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
