"""Master keys, workspace keys, data-key wrapping and field ciphertexts (CONTRACT.md, "PII encryption")."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onehazel.crypto.fields import (
    DecryptionFailed,
    FieldCipher,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapped_key_id,
)
from onehazel.crypto.keys import (
    KeyConfigError,
    KeyRing,
    MasterKey,
    UnknownKeyId,
    load_key_ring,
    parse_master_key,
)

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))
B64_A = base64.b64encode(SECRET_A).decode()
B64_B = base64.b64encode(SECRET_B).decode()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def ring(*specs: tuple[str, bytes]) -> KeyRing:
    return KeyRing([MasterKey(id=kid, secret=secret) for kid, secret in specs])


def cipher(dek: bytes | None = None, *, workspace_id: str = "ws_1", external_id: str = "p-1") -> FieldCipher:
    return FieldCipher(dek or bytes(32), workspace_id=workspace_id, external_id=external_id)


# --- workspace keys ---------------------------------------------------------------------------


def test_workspace_keys_differ_per_workspace() -> None:
    keys = ring(("k1", SECRET_A))
    one, two = keys.workspace_key("k1", "ws_1"), keys.workspace_key("k1", "ws_2")
    assert len(one) == 32
    assert one != two
    assert keys.workspace_key("k1", "ws_1") == one  # deterministic


def test_workspace_keys_differ_per_master_key_id_even_for_the_same_secret() -> None:
    keys = ring(("k1", SECRET_A), ("k2", SECRET_A), ("k3", SECRET_B))
    derived = {keys.workspace_key(kid, "ws_1") for kid in ("k1", "k2", "k3")}
    assert len(derived) == 3


def test_workspace_key_is_not_the_master_key() -> None:
    keys = ring(("k1", SECRET_A))
    assert keys.workspace_key("k1", "ws_1") != SECRET_A


def test_workspace_key_of_an_unconfigured_key_id_fails() -> None:
    with pytest.raises(UnknownKeyId):
        ring(("k1", SECRET_A)).workspace_key("nope", "ws_1")


# --- field ciphertexts ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_field_round_trip(value: Any) -> None:
    dek = new_data_key()
    token = cipher(dek).encrypt("attributes.email", value)
    assert token.startswith("v1.")
    assert cipher(dek).decrypt("attributes.email", token) == value


def test_same_value_encrypts_differently_each_time() -> None:
    c = cipher()
    assert c.encrypt("attributes.email", "a@example.com") != c.encrypt("attributes.email", "a@example.com")


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    token = cipher().encrypt("attributes.email", "canary-plaintext@example.com")
    assert "canary" not in token
    assert "canary" not in base64.urlsafe_b64decode(token[3:] + "==").decode("latin-1")


@pytest.mark.parametrize(
    ("elsewhere", "path"),
    [
        pytest.param({"workspace_id": "ws_2"}, "attributes.email", id="other-workspace"),
        pytest.param({"external_id": "p-2"}, "attributes.email", id="other-entity"),
        pytest.param({}, "attributes.phone", id="other-field"),
        pytest.param({"dek": bytes([1]) * 32}, "attributes.email", id="other-data-key"),
    ],
)
def test_ciphertext_is_bound_to_workspace_entity_field_and_key(elsewhere: dict[str, Any], path: str) -> None:
    dek = bytes(32)
    token = cipher(dek).encrypt("attributes.email", "alice@example.com")
    other = cipher(
        elsewhere.get("dek", dek),
        workspace_id=elsewhere.get("workspace_id", "ws_1"),
        external_id=elsewhere.get("external_id", "p-1"),
    )
    with pytest.raises(DecryptionFailed):
        other.decrypt(path, token)


def test_entity_ids_that_concatenate_alike_are_still_distinct() -> None:
    # ("ws_1", "a.b" / "c") must not authenticate as ("ws_1", "a" / "b.c").
    token = cipher(external_id="a").encrypt("b.c", "x")
    with pytest.raises(DecryptionFailed):
        cipher(external_id="a.b").decrypt("c", token)


def _flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))
    raw[index] ^= 0x01
    return "v1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("index", [0, 11, 12, -1])
def test_tampered_ciphertext_fails(index: int) -> None:
    c = cipher()
    token = c.encrypt("attributes.email", "alice@example.com")
    with pytest.raises(DecryptionFailed):
        c.decrypt("attributes.email", _flip(token, index))


@pytest.mark.parametrize(
    "token",
    ["", "v1.", "v1.AAAA", "v2." + "A" * 60, "not a token", "v1.!!!!"],
)
def test_malformed_ciphertext_fails_cleanly(token: str) -> None:
    with pytest.raises(DecryptionFailed):
        cipher().decrypt("attributes.email", token)


def test_encrypt_and_decrypt_fields_use_the_prefix() -> None:
    c = cipher()
    tokens = c.encrypt_fields("attributes", {"email": "a@example.com", "phone": "+1 555"})
    assert set(tokens) == {"email", "phone"}
    assert c.decrypt_fields("attributes", tokens) == {"email": "a@example.com", "phone": "+1 555"}
    with pytest.raises(DecryptionFailed):
        c.decrypt_fields("events/evt_1/data", tokens)


def test_field_cipher_repr_hides_the_key() -> None:
    dek = bytes(range(32))
    text = repr(cipher(dek))
    assert dek.hex() not in text
    assert base64.b64encode(dek).decode() not in text
    assert str(list(dek)) not in text


# --- wrapped data keys ------------------------------------------------------------------------


def test_wrap_unwrap_data_key_round_trip() -> None:
    keys = ring(("k1", SECRET_A))
    dek = new_data_key()
    wrapped = wrap_data_key(keys, "ws_1", "p-1", dek)
    assert wrapped.startswith("v1.k1.")
    assert wrapped_key_id(wrapped) == "k1"
    assert dek.hex() not in wrapped
    assert unwrap_data_key(keys, "ws_1", "p-1", wrapped) == dek


@pytest.mark.parametrize(("workspace_id", "external_id"), [("ws_2", "p-1"), ("ws_1", "p-2")])
def test_wrapped_data_key_is_bound_to_workspace_and_entity(workspace_id: str, external_id: str) -> None:
    keys = ring(("k1", SECRET_A))
    wrapped = wrap_data_key(keys, "ws_1", "p-1", new_data_key())
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(keys, workspace_id, external_id, wrapped)


def test_wrapped_data_key_fails_under_another_master_secret() -> None:
    wrapped = wrap_data_key(ring(("k1", SECRET_A)), "ws_1", "p-1", new_data_key())
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(ring(("k1", SECRET_B)), "ws_1", "p-1", wrapped)


def test_wrapped_data_key_under_an_unconfigured_key_id_fails() -> None:
    wrapped = wrap_data_key(ring(("old", SECRET_A)), "ws_1", "p-1", new_data_key())
    with pytest.raises(UnknownKeyId):
        unwrap_data_key(ring(("new", SECRET_B)), "ws_1", "p-1", wrapped)


@pytest.mark.parametrize("wrapped", ["", "v1", "v2.k1.AAAA", "garbage"])
def test_malformed_wrapped_key_fails(wrapped: str) -> None:
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(ring(("k1", SECRET_A)), "ws_1", "p-1", wrapped)


def test_key_rotation_old_data_still_unwraps_and_new_data_uses_the_last_key() -> None:
    old_ring = ring(("old", SECRET_A))
    dek_old = new_data_key()
    wrapped_old = wrap_data_key(old_ring, "ws_1", "p-1", dek_old)

    rotated = ring(("old", SECRET_A), ("new", SECRET_B))
    assert rotated.current.id == "new"
    assert unwrap_data_key(rotated, "ws_1", "p-1", wrapped_old) == dek_old

    dek_new = new_data_key()
    wrapped_new = wrap_data_key(rotated, "ws_1", "p-2", dek_new)
    assert wrapped_key_id(wrapped_new) == "new"
    assert unwrap_data_key(rotated, "ws_1", "p-2", wrapped_new) == dek_new
    with pytest.raises(UnknownKeyId):
        unwrap_data_key(old_ring, "ws_1", "p-2", wrapped_new)


# --- master key parsing -----------------------------------------------------------------------


def test_parse_master_key_with_and_without_id() -> None:
    with_id = parse_master_key(f"prod-2026_1:{B64_A}")
    assert (with_id.id, with_id.secret) == ("prod-2026_1", SECRET_A)
    without = parse_master_key(f"  {B64_A}\n")
    assert without.secret == SECRET_A
    assert without.id.startswith("k")
    assert parse_master_key(B64_A).id == without.id  # the same key always gets the same id
    assert parse_master_key(B64_B).id != without.id


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("not base64!!", "base64", id="bad-base64"),
        pytest.param("k1:%%%%", "base64", id="bad-base64-with-id"),
        pytest.param(base64.b64encode(bytes(16)).decode(), "32 bytes, got 16", id="too-short"),
        pytest.param(base64.b64encode(bytes(33)).decode(), "32 bytes, got 33", id="too-long"),
        pytest.param("", "32 bytes, got 0", id="empty"),
        pytest.param(f"bad id:{B64_A}", "id", id="bad-id"),
        pytest.param(f"{'x' * 33}:{B64_A}", "id", id="id-too-long"),
    ],
)
def test_parse_master_key_errors(text: str, needle: str) -> None:
    with pytest.raises(KeyConfigError, match=needle):
        parse_master_key(text)


def test_key_ring_rejects_empty_and_duplicate_ids() -> None:
    with pytest.raises(KeyConfigError):
        KeyRing([])
    with pytest.raises(KeyConfigError):
        ring(("k1", SECRET_A), ("k1", SECRET_B))


def test_reprs_never_show_key_material() -> None:
    key = parse_master_key(f"k1:{B64_A}")
    keys = KeyRing([key])
    for text in (repr(key), str(key), repr(keys), str(keys)):
        assert B64_A not in text
        assert SECRET_A.hex() not in text
        assert repr(SECRET_A) not in text
        assert "k1" in text


# --- loading the key ring ---------------------------------------------------------------------


def test_default_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    first = load_key_ring(env={}, default_file=path)
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    content = path.read_text()
    second = load_key_ring(env={}, default_file=path)
    assert path.read_text() == content
    assert second.ids == first.ids
    assert second.current.secret == first.current.secret
    assert second.workspace_key(second.current.id, "ws_1") == first.workspace_key(first.current.id, "ws_1")


def test_env_key_wins_over_key_file_and_default(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"fromfile:{B64_B}\n")
    default = tmp_path / "default.key"
    keys = load_key_ring(
        env={"ONEHAZEL_MASTER_KEY": f"fromenv:{B64_A}", "ONEHAZEL_MASTER_KEY_FILE": str(key_file)},
        default_file=default,
    )
    assert keys.ids == ["fromenv"]
    assert not default.exists()


def test_key_file_wins_over_default(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# rotated 2026-11\nold:{B64_A}\n\nnew:{B64_B}\n")
    default = tmp_path / "default.key"
    keys = load_key_ring(env={"ONEHAZEL_MASTER_KEY_FILE": str(key_file)}, default_file=default)
    assert keys.ids == ["old", "new"]
    assert keys.current.id == "new"
    assert not default.exists()


def test_env_key_list_last_one_is_current() -> None:
    keys = load_key_ring(env={"ONEHAZEL_MASTER_KEY": f"old:{B64_A}, new:{B64_B}"}, default_file=None)
    assert keys.ids == ["old", "new"]
    assert keys.current.secret == SECRET_B


def test_missing_key_file_is_a_config_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyConfigError, match="does not exist"):
        load_key_ring(env={"ONEHAZEL_MASTER_KEY_FILE": str(missing)}, default_file=tmp_path / "d.key")
    assert not missing.exists()
    assert not (tmp_path / "d.key").exists()


def test_no_key_and_no_default_is_a_config_error() -> None:
    with pytest.raises(KeyConfigError, match="ONEHAZEL_MASTER_KEY"):
        load_key_ring(env={}, default_file=None)


def test_bad_env_key_is_a_config_error_that_does_not_echo_it() -> None:
    bad = base64.b64encode(b"secret-material-16").decode()
    with pytest.raises(KeyConfigError) as info:
        load_key_ring(env={"ONEHAZEL_MASTER_KEY": bad}, default_file=None)
    assert bad not in str(info.value)
