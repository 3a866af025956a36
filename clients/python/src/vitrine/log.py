"""The transparency log's formats, read and checked in Python: the leaf
(formats 1, 2 and 3, as ``crates/tlog/src/leaf.rs`` documents them), RFC 6962
hashing and inclusion proofs, C2SP signed notes (checkpoints) and verifier
keys, and C2SP cosignatures.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import ReceiptInvalid


@dataclass(frozen=True)
class Leaf:
    """One decoded leaf: what the log records of a call."""

    format: int
    created_at_ms: int
    model: str
    version: int
    blob_sha256: str
    caller: str
    app: str
    node: str
    #: The model's task (empty in format 1).
    task: str
    price: int
    creator_share: int
    node_share: int
    treasury_share: int
    input_sha256: str
    output_sha256: str
    idempotency_key_sha256: Optional[str]
    #: A failed call's error code; empty if it succeeded (always in format 1).
    error: str
    #: Format 3, a call paid on the chain (x402): the payer (CAIP-10,
    #: ``eip155:8453:0x…``) and the settlement's transaction; empty before.
    payer: str = ""
    settlement: str = ""

    @staticmethod
    def decode(raw: bytes) -> "Leaf":
        """Decodes leaf bytes; ``ReceiptInvalid`` if they are not a leaf."""
        at = 0

        def take(n: int) -> bytes:
            nonlocal at
            if at + n > len(raw):
                raise ReceiptInvalid("the leaf ends early")
            chunk = raw[at : at + n]
            at += n
            return chunk

        def string() -> str:
            try:
                return take(take(1)[0]).decode()
            except UnicodeDecodeError as error:
                raise ReceiptInvalid("a text field of the leaf is not UTF-8") from error

        fmt = take(1)[0]
        if fmt not in (1, 2, 3):
            raise ReceiptInvalid(f"leaf format {fmt} is not known")
        (created,) = struct.unpack(">q", take(8))
        model = string()
        (version,) = struct.unpack(">I", take(4))
        blob, caller = take(32).hex(), take(32).hex()
        app, node = string(), string()
        task = string() if fmt >= 2 else ""
        price, creator, node_share, treasury = struct.unpack(">4Q", take(32))
        inputs, outputs, key = take(32).hex(), take(32).hex(), take(32)
        error = string() if fmt >= 2 else ""
        payer, settlement = (string(), string()) if fmt == 3 else ("", "")
        if fmt == 3 and not (payer and settlement):
            raise ReceiptInvalid("a format 3 leaf names its payer and its settlement")
        if at != len(raw):
            raise ReceiptInvalid(f"the leaf has {len(raw) - at} bytes after its last field")
        if creator + node_share + treasury != price:
            raise ReceiptInvalid("the leaf's shares do not add up to its price")
        if error and price:
            raise ReceiptInvalid("the leaf charges a failed call")
        return Leaf(
            fmt, created, model, version, blob, caller, app, node, task, price, creator, node_share, treasury,
            inputs, outputs, None if key == bytes(32) else key.hex(), error, payer, settlement,
        )


def leaf_hash(raw: bytes) -> bytes:
    """RFC 6962: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + raw).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: List[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: whether ``proof`` leads from the leaf hash at
    ``index`` to ``root`` in a tree of ``size`` leaves."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def _key_id(name: str, kind: int, key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key ``name+<key ID hex>+base64(type || key)``: the
    log's (type 0x01, signed notes) or a witness's (type 0x04, cosignatures)."""

    name: str
    kind: int
    key: bytes

    @staticmethod
    def parse(vkey: str) -> "VerifierKey":
        """Parses a verifier key; ``ValueError`` if it is malformed or its key ID does not match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise ValueError("a verifier key is name+id+key")
        name, key_id, encoded = parts
        raw = base64.b64decode(encoded, validate=True)
        if len(raw) != 33 or raw[0] not in (0x01, 0x04):
            raise ValueError("only Ed25519 note keys (0x01) and cosignature keys (0x04) are known")
        key = VerifierKey(name, raw[0], raw[1:])
        if key.key_id().hex() != key_id:
            raise ValueError("the key ID does not match the key")
        return key

    def key_id(self) -> bytes:
        """``SHA-256(name || 0x0A || type || key)[:4]``."""
        return _key_id(self.name, self.kind, self.key)

    def _signatures(self, note: str) -> Tuple[str, List[bytes]]:
        split = note.find("\n\n")
        if split < 0:
            raise ReceiptInvalid("the checkpoint is not a signed note")
        body, blobs = note[: split + 1], []
        for line in note[split + 2 :].split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != self.name:
                continue
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except ValueError:
                continue
            if blob[:4] == self.key_id():
                blobs.append(blob[4:])
        return body, blobs

    def verify_note(self, note: str) -> str:
        """The body of a note this (note) key signed; ``ReceiptInvalid`` if it did not."""
        body, blobs = self._signatures(note)
        public = Ed25519PublicKey.from_public_bytes(self.key)
        for blob in blobs:
            try:
                public.verify(blob, body.encode())
                return body
            except InvalidSignature:
                pass
        raise ReceiptInvalid(f"the checkpoint carries no valid signature by {self.name}")

    def verify_cosignature(self, note: str) -> int:
        """The timestamp of this witness's valid cosignature on a note;
        ``ReceiptInvalid`` if there is none."""
        body, blobs = self._signatures(note)
        public = Ed25519PublicKey.from_public_bytes(self.key)
        for blob in blobs:
            if len(blob) != 8 + 64:
                continue
            (timestamp,) = struct.unpack(">Q", blob[:8])
            message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
            try:
                public.verify(blob[8:], message)
                return timestamp
            except InvalidSignature:
                pass
        raise ReceiptInvalid(f"the checkpoint carries no valid cosignature by witness {self.name}")


@dataclass(frozen=True)
class Checkpoint:
    """A verified C2SP checkpoint: origin, size, root."""

    origin: str
    size: int
    root: bytes
    note: str

    @staticmethod
    def verified(note: str, key: VerifierKey) -> "Checkpoint":
        """The checkpoint in a signed note, once ``key`` verifies it and names its origin."""
        body = key.verify_note(note)
        lines = body.split("\n")
        if len(lines) < 4:
            raise ReceiptInvalid("the checkpoint has no origin, size and root")
        checkpoint = Checkpoint(lines[0], int(lines[1]), base64.b64decode(lines[2]), note)
        if checkpoint.origin != key.name:
            raise ReceiptInvalid(f"the checkpoint's origin {checkpoint.origin} is not the key's name {key.name}")
        return checkpoint


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """A bare Ed25519 signature (a node's, on a leaf)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False
