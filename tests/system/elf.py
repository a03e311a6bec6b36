"""Reading the ELF files build-arm.sh ships: headers, segments, sections.
Only what the tests need, for 32- and 64-bit little-endian files."""

import struct
from pathlib import Path

PT_DYNAMIC, PT_INTERP = 2, 3
SHT_SYMTAB = 2
EF_ARM_ABI_FLOAT_HARD = 0x400
EF_ARM_EABI_VER5 = 0x05000000


def _header(data: bytes, path: Path) -> tuple:
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    elf_class, endian = data[4], data[5]
    assert endian == 1, f"{path} is not little-endian"
    if elf_class == 1:
        return elf_class, struct.unpack_from("<HHIIIIIHHHHHH", data, 16), "<IIIIIIIIII"
    return elf_class, struct.unpack_from("<HHIQQQIHHHHHH", data, 16), "<IIQQQQIIQQ"


def facts(path: Path) -> dict:
    data = path.read_bytes()
    elf_class, header, _ = _header(data, path)
    e_type, e_machine, _v, _entry, e_phoff, e_shoff, e_flags, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum, _ = \
        header
    segments = [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]
    section_types = [struct.unpack_from("<I", data, e_shoff + i * e_shentsize + 4)[0] for i in range(e_shnum)]
    return {
        "class": elf_class,
        "type": e_type,
        "machine": e_machine,
        "flags": e_flags,
        "segments": segments,
        "has_symtab": SHT_SYMTAB in section_types,
        "size": len(data),
    }


def section(path: Path, name: str) -> bytes | None:
    """The contents of the section called `name`, or None."""
    data = path.read_bytes()
    _class, header, section_format = _header(data, path)
    e_shoff, e_shentsize, e_shnum, e_shstrndx = header[5], header[10], header[11], header[12]
    # Section header fields: name, type, flags, addr, offset, size, ...
    sections = [struct.unpack_from(section_format, data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    names_offset = sections[e_shstrndx][4]
    for sh_name, _type, _flags, _addr, offset, size, *_ in sections:
        start = names_offset + sh_name
        if data[start:data.index(b"\0", start)].decode() == name:
            return data[offset:offset + size]
    return None
