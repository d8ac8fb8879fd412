"""Raw DICOM encoding and decoding for the thousands of per-frame functional group items of a multi-frame object.

pydicom builds a Dataset object per item and element; for the 12 000 frames
of a 300-slice, 40-segment SEG that takes seconds each way. The per-frame
items medseg writes and reads are regular, so they are encoded here straight
to bytes (Explicit VR Little Endian, defined lengths throughout) and decoded
by a walker that collects a few tags from each item at any nesting depth
(Explicit or Implicit VR, little or big endian, defined or undefined lengths).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.datadict import dictionary_VR

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PAD = {b"UI": b"\x00"}  # other text VRs pad with a space


# ---- encoding (Explicit VR Little Endian) -------------------------------------------------------------------------


def element(tag: int, vr: str, value: bytes | str) -> bytes:
    """One data element; text values are padded to an even length as their VR requires."""
    data = value.encode("ascii") if isinstance(value, str) else value
    code = vr.encode("ascii")
    if len(data) % 2:
        data += _PAD.get(code, b" ")
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + code
    if code in _LONG_VRS:
        return head + b"\x00\x00" + struct.pack("<I", len(data)) + data
    return head + struct.pack("<H", len(data)) + data


def item(content: bytes) -> bytes:
    """A sequence item of defined length holding the encoded elements ``content``."""
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def sequence(tag: int, items: Iterable[bytes]) -> bytes:
    """A sequence element of defined length holding encoded ``items`` (see :func:`item`)."""
    body = b"".join(items)
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ\x00\x00" + struct.pack("<I", len(body)) + body


# ---- decoding -------------------------------------------------------------------------------------------------------


class _Walker:
    """Collects the first value of each wanted tag inside each item of one sequence."""

    def __init__(self, buffer: bytes | memoryview, explicit: bool, little: bool, wanted: set[int]) -> None:
        self.buf, self.explicit, self.wanted = buffer, explicit, wanted
        e = "<" if little else ">"
        self.tag_length = struct.Struct(f"{e}HHI").unpack_from
        self.tag_vr_short = struct.Struct(f"{e}HH2sH").unpack_from
        self.long_length = struct.Struct(f"{e}I").unpack_from

    def sequence(self, pos: int, length: int, found: dict[int, bytes] | None = None) -> tuple[int, list[dict[int, bytes]]]:
        """Walk the sequence whose value starts at ``pos``; returns the position after it and per-item values.

        Top level (``found`` None): one dict per item. Nested: everything goes into ``found``.
        """
        end = pos + length if length != UNDEFINED else len(self.buf)
        per_item: list[dict[int, bytes]] = []
        while pos < end:
            group, elem, item_length = self.tag_length(self.buf, pos)
            tag = group << 16 | elem
            if tag == SEQUENCE_END:
                return pos + 8, per_item
            if tag != ITEM:
                raise ValueError(f"expected an item at byte {pos}, found tag ({group:04X},{elem:04X})")
            values = found if found is not None else {}
            pos = self._elements(pos + 8, item_length, values)
            if found is None:
                per_item.append(values)
        return end, per_item

    def _elements(self, pos: int, length: int, found: dict[int, bytes]) -> int:
        """Walk the elements of one item; returns the position after it."""
        end = pos + length if length != UNDEFINED else len(self.buf)
        while pos < end:
            if self.explicit:
                group, elem, vr, short = self.tag_vr_short(self.buf, pos)
                tag = group << 16 | elem
                if group == 0xFFFE:  # item delimiter (no VR)
                    return pos + 8
                if vr in _LONG_VRS:
                    value_length, at = self.long_length(self.buf, pos + 8)[0], pos + 12
                else:
                    value_length, at = short, pos + 8
                is_sequence = vr == b"SQ"
            else:
                group, elem, value_length = self.tag_length(self.buf, pos)
                tag, at = group << 16 | elem, pos + 8
                if group == 0xFFFE:
                    return pos + 8
                is_sequence = value_length == UNDEFINED or _is_sequence(tag)
            if is_sequence:
                pos = self.sequence(at, value_length, found)[0]
                continue
            if tag in self.wanted and tag not in found:
                found[tag] = bytes(self.buf[at : at + value_length])
            pos = at + value_length
        return end


def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown tags
        return False


def sequence_items(buffer: bytes | memoryview, pos: int, length: int, *, explicit: bool, little: bool,
                   wanted: set[int]) -> list[dict[int, bytes]]:
    """For each item of the sequence whose value starts at ``pos`` (``length`` bytes or undefined), the raw
    value of the first element of each tag in ``wanted`` found inside it, at any depth.

    Raises
    ------
    ValueError, struct.error
        For bytes that are not a well-formed sequence.
    """
    return _Walker(buffer, explicit, little, wanted).sequence(pos, length)[1]


__all__ = ["UNDEFINED", "element", "item", "sequence", "sequence_items"]
