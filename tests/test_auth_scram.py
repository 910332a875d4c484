"""xmppd.auth: SCRAM keys and exchanges (RFC 5802, RFC 7677), SASLprep, fake salts.

The exchange tests use the real AuthService over a real SQLite account
store; the client side is tests/scramclient.py, itself checked against the
RFC vectors below.
"""
import base64

import pytest

from xmppd import config
from xmppd.auth import credentials as credmod
from xmppd.auth.errors import SASLFailure
from xmppd.auth.sasl import AuthService
from xmppd.auth.scram import verify_proof
from xmppd.storage import open_database
from xmppd.storage.accounts import AccountStore, hash_password
from xmppd.auth.throttle import AuthThrottle

from scramclient import ScramClient, attrs, b64

# RFC 5802 §5 and RFC 7677 §3: user "user", password "pencil", 4096 rounds.
VECTORS = [
    ("SHA-1", "fyko+d2lbbFgONRv9qkxdawL", "QSXCR+Q6sek8bf92",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    ("SHA-256", "rOprNGfwEbeRWgbNEkqO", "W22ZaJ0SNY7soEsUEjb6gQ==",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
]


@pytest.mark.parametrize("hash_name,cnonce,salt,server_first,client_final,verifier", VECTORS)
def test_rfc_vectors(hash_name, cnonce, salt, server_first, client_final, verifier):
    creds = credmod.derive("pencil", 4096, base64.b64decode(salt))
    stored, server = creds.keys[hash_name]
    auth = f"n=user,r={cnonce},{server_first},{client_final[:client_final.rindex(',p=')]}".encode()
    proof = base64.b64decode(client_final.rsplit("p=", 1)[1])
    assert b64(verify_proof(hash_name, stored, server, auth, proof)) == verifier
    wrong = bytes([proof[0] ^ 1]) + proof[1:]
    assert verify_proof(hash_name, stored, server, auth, wrong) is None
    # The test client computes the same messages.
    c = ScramClient(hash_name, "user", "pencil", cnonce)
    assert c.final(server_first) == client_final and c.expected_verifier == verifier
    # PLAIN is checked against the same stored keys.
    assert credmod.verify_plain(creds, "pencil") and not credmod.verify_plain(creds, "pencil ")


def test_saslprep_rfc4013_examples():
    assert credmod.saslprep("I\u00adX") == "IX"
    assert credmod.saslprep("user") == "user"
    assert credmod.saslprep("\u00aa") == "a"
    assert credmod.saslprep("\u2168") == "IX"
    assert credmod.saslprep("a\u00a0b") == "a b"
    for bad in ("\u0007", "\u0627\u0031"):
        with pytest.raises(credmod.CredentialError):
            credmod.saslprep(bad)


def test_stored_credentials_never_contain_the_password(tmp_path):
    cfg = config.load(overrides={"data_dir": str(tmp_path), "scram_iterations": 4096})
    db = open_database(cfg.data_dir)
    AccountStore(db, cfg).create("alice", "correct horse battery")
    row = db.query("SELECT * FROM accounts")[0]
    assert not any(isinstance(v, (bytes, str)) and b"correct horse" in
                   (v if isinstance(v, bytes) else v.encode()) for v in row)
    creds, legacy = AccountStore(db, cfg).get_credentials("alice")
    assert legacy is None and creds.iterations == 4096 and len(creds.salt) == 16
    assert AccountStore(db, cfg).check("alice", "correct horse battery")


@pytest.fixture
def auth(tmp_path):
    cfg = config.load(overrides={"data_dir": str(tmp_path), "scram_iterations": 4096})
    db = open_database(cfg.data_dir)
    store = AccountStore(db, cfg)
    store.create("alice", "pencil")
    store.create("legacy", None, password_hash=hash_password("pencil", n=2 ** 10))
    svc = AuthService(cfg, store, AuthThrottle(5, 20, 300, clock=lambda: 0.0))
    yield svc
    db.close()


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "SCRAM steps must not wait for anything"
    if isinstance(out[0], Exception) or hasattr(out[0], "value"):
        raise getattr(out[0], "value", out[0])
    return out[0]


def fail_condition(d):
    with pytest.raises(SASLFailure) as e:
        result(d)
    return e.value.condition


def enc(s):
    return base64.b64encode(s.encode()).decode()


def run(auth, mech="SCRAM-SHA-256", user="alice", password="pencil", **kw):
    ex = auth.exchange(None, "192.0.2.1")
    c = ScramClient(mech.split("SCRAM-")[1], user, password, "clientnonce123")
    kind, first = result(ex.start(mech, enc(c.first())))
    assert kind == "challenge"
    return ex, c, first.decode()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_exchange_logs_in_and_proves_the_server(auth, mech):
    ex, c, first = run(auth, mech)
    a = attrs(first)
    assert a["i"] == "4096" and "h" in a          # XEP-0474 downgrade-protection hash
    kind, final, user = result(ex.respond(enc(c.final(first))))
    assert (kind, user) == ("success", "alice")
    assert final.decode() == "v=" + c.expected_verifier


def test_wrong_password_and_unknown_user_fail_at_the_proof_alike(auth):
    ex, c, first = run(auth, password="wrong")
    assert fail_condition(ex.respond(enc(c.final(first)))) == "not-authorized"
    ex, c, first2 = run(auth, user="nobody")
    fake = attrs(first2)
    assert len(base64.b64decode(fake["s"])) == 16 and fake["i"] == "4096"
    assert fail_condition(ex.respond(enc(c.final(first2)))) == "not-authorized"
    # Stable across restarts (the secret lives in the data dir) and per user.
    again = AuthService(auth.cfg, auth.accounts, auth.throttle)
    assert attrs(run(again, user="nobody")[2])["s"] == fake["s"]
    assert attrs(run(again, user="nobody2")[2])["s"] != fake["s"]


def test_scrypt_only_account_gets_a_fake_challenge(auth):
    ex, c, first = run(auth, user="legacy")
    assert fail_condition(ex.respond(enc(c.final(first)))) == "not-authorized"


@pytest.mark.parametrize("first,condition", [
    ("n,,n=alice", "malformed-request"),                     # no nonce
    ("n,,r=abc,n=alice", "malformed-request"),               # wrong order
    ("n,,m=ext,n=alice,r=abc", "malformed-request"),         # reserved m=
    ("x,,n=alice,r=abc", "malformed-request"),               # bad gs2 flag
    ("n,alice,n=alice,r=abc", "malformed-request"),          # authzid without a=
    ("n,,n=al=ZZice,r=abc", "malformed-request"),            # bad saslname escape
    ("n,,n=alice,r=a b", "malformed-request"),               # unprintable nonce
    ("n,a=bob@localhost,n=alice,r=abc", "invalid-authzid"),
    ("p=tls-unique,,n=alice,r=abc", "malformed-request"),    # binding with a non-PLUS mechanism
    ("n,,n=alice,r=" + "a" * 5000, "malformed-request"),     # huge attribute
    ("n,,n=,r=abc", "not-authorized"),                       # empty username
    ("n", "malformed-request"),
])
def test_bad_client_first(auth, first, condition):
    ex = auth.exchange(None, "192.0.2.1")
    assert fail_condition(ex.start("SCRAM-SHA-256", enc(first))) == condition


def test_bad_client_final(auth):
    cases = [
        (lambda c, f: "garbage", "malformed-request"),
        (lambda c, f: c.final(f).replace("c=", "x="), "malformed-request"),
        (lambda c, f: c.final(f).rsplit(",p=", 1)[0], "malformed-request"),
        (lambda c, f: c.final(f).rsplit(",p=", 1)[0] + ",p=!!notbase64", "malformed-request"),
        (lambda c, f: c.final(f).rsplit(",p=", 1)[0] + ",p=" + b64(b"short"), "malformed-request"),
        (lambda c, f: c.final(f, nonce="clientnonce123"), "not-authorized"),   # server part missing
        (lambda c, f: c.final(f, nonce=attrs(f)["r"] + "x"), "not-authorized"),
        (lambda c, f: c.final(f, proof_tamper=True), "not-authorized"),
        (lambda c, f: c.final(f).replace("c=biws", "c=" + b64(b"y,,")), "not-authorized"),
    ]
    for make, condition in cases:
        ex, c, first = run(auth)
        assert fail_condition(ex.respond(enc(make(c, first)))) == condition, make


def test_outer_encoding_order_and_mechanism_errors(auth):
    ex = auth.exchange(None, "192.0.2.1")
    assert fail_condition(ex.start("SCRAM-SHA-256", "not base64!")) == "incorrect-encoding"
    ex = auth.exchange(None, "192.0.2.1")
    assert fail_condition(ex.respond(enc("c=biws,r=x,p=AAAA"))) == "malformed-request"   # out of order
    # -PLUS is not offered without TLS; unknown mechanisms are refused.
    for mech in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "DIGEST-MD5"):
        assert fail_condition(ex.start(mech, enc("n,,n=alice,r=abc"))) == "invalid-mechanism"
    # A finished exchange does not accept a replayed final message.
    ex, c, first = run(auth)
    final = enc(c.final(first))
    result(ex.respond(final))
    assert fail_condition(ex.respond(final)) == "malformed-request"
    # A replayed final message in a new exchange has the old nonce.
    ex2, c2, first2 = run(auth)
    assert fail_condition(ex2.respond(final)) == "not-authorized"


def test_failures_count_and_lock_out(auth):
    for _ in range(5):
        ex, c, first = run(auth, password="wrong")
        with pytest.raises(SASLFailure) as e:
            result(ex.respond(enc(c.final(first))))
        ex.failure_delay(e.value)
    ex = auth.exchange(None, "192.0.2.1")
    c = ScramClient("SHA-256", "alice", "pencil", "n1")
    assert fail_condition(ex.start("SCRAM-SHA-256", enc(c.first()))) == "temporary-auth-failure"


def test_offer_order(tmp_path):
    cfg = config.load(overrides={"data_dir": str(tmp_path)})
    svc = AuthService(cfg, None, None)
    assert svc.offer(None) == (("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"), ())


def test_downgrade_protection_hash_xep0474():
    from xmppd.auth.scram import downgrade_hash
    # XEP-0474 §3.3's example: SHA-1 over the mechanisms and the XEP-0440 binding types.
    assert downgrade_hash("SHA-1", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
                          ["tls-server-end-point", "tls-exporter"]) == "G6k/rBLDqgOhRRaCuuatSDFkJ08="


def test_server_first_carries_the_hash_of_what_was_offered(auth):
    import hashlib
    ex, c, first = run(auth)
    expected = base64.b64encode(hashlib.sha256(b"PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-256").digest()).decode()
    assert attrs(first)["h"] == expected
