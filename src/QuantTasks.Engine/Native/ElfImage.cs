using System.Buffers.Binary;
using System.Text;

namespace QuantTasks.Engine.Native;

/// <summary>
/// Just enough of a 64-bit little-endian ELF shared object to read and edit its symbol versioning: the dynamic
/// symbols (<c>.dynsym</c>), their version indices (<c>.gnu.version</c>), the versions it defines
/// (<c>.gnu.version_d</c>) and the versions it needs from other libraries (<c>.gnu.version_r</c>).
/// </summary>
internal sealed class ElfImage
{
    private const uint SectionDynSym = 11;
    private const uint SectionVerDef = 0x6ffffffd;
    private const uint SectionVerNeed = 0x6ffffffe;
    private const uint SectionVerSym = 0x6fffffff;
    private const int SymbolSize = 24;

    /// <summary>The <c>vna_flags</c> bit that makes a missing needed version a warning instead of a load failure.</summary>
    public const ushort VersionFlagWeak = 0x2;

    /// <summary>The version index meaning "unversioned, global".</summary>
    public const ushort VersionIndexGlobal = 1;

    private readonly byte[] _bytes;
    private readonly List<Section> _sections = [];

    private ElfImage(byte[] bytes)
    {
        _bytes = bytes;
        if (bytes.Length < 64 || bytes[0] != 0x7F || bytes[1] != 'E' || bytes[2] != 'L' || bytes[3] != 'F')
        {
            throw new InvalidDataException("Not an ELF file.");
        }

        if (bytes[4] != 2 || bytes[5] != 1)
        {
            throw new InvalidDataException("Only 64-bit little-endian ELF files are supported.");
        }

        var sectionOffset = U64(0x28);
        int entrySize = U16(0x3A);
        int count = U16(0x3C);
        for (var i = 0; i < count; i++)
        {
            var header = checked(sectionOffset + (ulong)(i * entrySize));
            _sections.Add(new Section(U32(header + 4), U64(header + 0x18), U64(header + 0x20), U32(header + 0x28), U32(header + 0x2C)));
        }
    }

    /// <summary>The file's bytes, including any edits.</summary>
    public byte[] Bytes => _bytes;

    /// <summary>Parses an ELF image held in memory; edits change <paramref name="bytes"/> in place.</summary>
    public static ElfImage Parse(byte[] bytes) => new(bytes);

    /// <summary>The version names the object defines, such as <c>GLIBCXX_3.4.30</c> for libstdc++.</summary>
    public IReadOnlyList<string> DefinedVersions()
    {
        var names = new List<string>();
        var section = Find(SectionVerDef);
        if (section is null)
        {
            return names;
        }

        var strings = _sections[(int)section.Value.Link].Offset;
        var entry = section.Value.Offset;
        for (var i = 0u; i < section.Value.Info; i++)
        {
            var auxCount = U16(entry + 6);
            var aux = U32(entry + 12);
            if (auxCount > 0)
            {
                names.Add(String(strings, U32(entry + aux)));
            }

            var next = U32(entry + 16);
            if (next == 0)
            {
                break;
            }

            entry += next;
        }

        return names;
    }

    /// <summary>The versions the object needs, with their flags.</summary>
    public IReadOnlyList<(string Library, string Version, ushort Flags)> NeededVersions()
    {
        var result = new List<(string, string, ushort)>();
        foreach (var (library, version, flagsOffset) in NeededVersionEntries())
        {
            result.Add((library, version, U16(flagsOffset)));
        }

        return result;
    }

    /// <summary>The version index of a dynamic symbol, or null when the object has no such symbol.</summary>
    public ushort? SymbolVersionIndex(string symbol) =>
        SymbolVersionSlot(symbol) is { } slot ? U16(slot) : null;

    /// <summary>Makes a dynamic symbol unversioned. Returns false when the object has no such symbol.</summary>
    public bool ClearSymbolVersion(string symbol)
    {
        if (SymbolVersionSlot(symbol) is not { } slot)
        {
            return false;
        }

        BinaryPrimitives.WriteUInt16LittleEndian(_bytes.AsSpan(checked((int)slot)), VersionIndexGlobal);
        return true;
    }

    /// <summary>Marks a needed version weak. Returns false when the object does not need that version.</summary>
    public bool MarkNeededVersionWeak(string version)
    {
        var found = false;
        foreach (var (_, name, flagsOffset) in NeededVersionEntries())
        {
            if (name == version)
            {
                var flags = (ushort)(U16(flagsOffset) | VersionFlagWeak);
                BinaryPrimitives.WriteUInt16LittleEndian(_bytes.AsSpan(checked((int)flagsOffset)), flags);
                found = true;
            }
        }

        return found;
    }

    private IEnumerable<(string Library, string Version, ulong FlagsOffset)> NeededVersionEntries()
    {
        var section = Find(SectionVerNeed);
        if (section is null)
        {
            yield break;
        }

        var strings = _sections[(int)section.Value.Link].Offset;
        var entry = section.Value.Offset;
        for (var i = 0u; i < section.Value.Info; i++)
        {
            var library = String(strings, U32(entry + 4));
            int auxCount = U16(entry + 2);
            var aux = entry + U32(entry + 8);
            for (var j = 0; j < auxCount; j++)
            {
                yield return (library, String(strings, U32(aux + 8)), aux + 4);
                var nextAux = U32(aux + 12);
                if (nextAux == 0)
                {
                    break;
                }

                aux += nextAux;
            }

            var next = U32(entry + 12);
            if (next == 0)
            {
                break;
            }

            entry += next;
        }
    }

    private ulong? SymbolVersionSlot(string symbol)
    {
        var symbols = Find(SectionDynSym);
        var versions = Find(SectionVerSym);
        if (symbols is null || versions is null)
        {
            return null;
        }

        var strings = _sections[(int)symbols.Value.Link].Offset;
        var count = symbols.Value.Size / SymbolSize;
        for (var i = 0ul; i < count; i++)
        {
            if (String(strings, U32(symbols.Value.Offset + (i * SymbolSize))) == symbol)
            {
                return versions.Value.Offset + (i * 2);
            }
        }

        return null;
    }

    private Section? Find(uint type)
    {
        foreach (var section in _sections)
        {
            if (section.Type == type)
            {
                return section;
            }
        }

        return null;
    }

    private string String(ulong table, uint offset)
    {
        var start = checked((int)(table + offset));
        var end = Array.IndexOf(_bytes, (byte)0, start);
        return Encoding.ASCII.GetString(_bytes, start, (end < 0 ? _bytes.Length : end) - start);
    }

    private ushort U16(ulong offset) => BinaryPrimitives.ReadUInt16LittleEndian(_bytes.AsSpan(checked((int)offset)));

    private uint U32(ulong offset) => BinaryPrimitives.ReadUInt32LittleEndian(_bytes.AsSpan(checked((int)offset)));

    private ulong U64(ulong offset) => BinaryPrimitives.ReadUInt64LittleEndian(_bytes.AsSpan(checked((int)offset)));

    private readonly record struct Section(uint Type, ulong Offset, ulong Size, uint Link, uint Info);
}
