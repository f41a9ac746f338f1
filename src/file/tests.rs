//! Unit tests of the file module's private parts: limits, error messages.

use super::*;

use crate::error::message_chain as chain;

/// Every value a file error carries, as its message chain shows it (an
/// exhaustive match: a new variant must say what it shows).
fn values(e: &FileError) -> Vec<String> {
    use FileError::*;
    match e {
        Io { path, .. } | ParentMissing { path } | ParentMismatch { path } | ParentCycle { path } => {
            vec![path.display().to_string()]
        }
        InParent { path, source } => {
            let mut v = vec![path.display().to_string()];
            v.extend(values(source));
            v
        }
        NotAFile { path, kind } => vec![path.display().to_string(), kind.to_string()],
        BadMagic | HeaderChecksum | IndexChecksum => vec![],
        UnsupportedVersion { major, minor } => vec![format!("{major}.{minor}")],
        UnsupportedFlags(flags) => vec![format!("{flags:#x}")],
        CorruptHeader(what) | CorruptIndex(what) => vec![what.to_string()],
        Truncated { expected, actual } | TrailingBytes { expected, actual } => {
            vec![expected.to_string(), actual.to_string()]
        }
        SizeLimit { what, value, limit } => vec![what.to_string(), value.to_string(), limit.to_string()],
        FrameCorrupt { frame } => vec![frame.to_string()],
        PageHash { page } => vec![page.to_string()],
        InvalidState(state) => vec![state.to_string()],
        SourcePageUnavailable { address } => vec![format!("{address:#x}")],
        InvalidLevel { level } => vec![level.to_string()],
        SnapshotCount { found } => vec![found.to_string()],
    }
}

#[test]
fn each_file_error_names_its_values_once() {
    use FileError::*;
    let io = || std::io::Error::other("disk on fire");
    let samples = [
        Io { path: "/data/one.vmsnap".into(), source: io() },
        NotAFile { path: "/dev/zero".into(), kind: "a character device" },
        BadMagic,
        UnsupportedVersion { major: 7, minor: 31 },
        UnsupportedFlags(0xF0),
        HeaderChecksum,
        CorruptHeader("index offset is not 64 + frames length"),
        IndexChecksum,
        Truncated { expected: 123_456, actual: 789 },
        TrailingBytes { expected: 2_222, actual: 33_333 },
        SizeLimit { what: "frame count", value: 44_444_444, limit: 16_777_216 },
        CorruptIndex("page runs overlap"),
        FrameCorrupt { frame: 5_150 },
        PageHash { page: 6_161 },
        InvalidState(StateError::Corrupt("allocations overlap or are out of order")),
        ParentMissing { path: "base/parent.vmsnap".into() },
        ParentMismatch { path: "base/other.vmsnap".into() },
        ParentCycle { path: "loop/self.vmsnap".into() },
        InParent { path: "outer/p.vmsnap".into(), source: Box::new(FrameCorrupt { frame: 9_191 }) },
        SourcePageUnavailable { address: 0x7_7777_0000 },
        InvalidLevel { level: 99 },
        SnapshotCount { found: 12_321 },
    ];
    for e in &samples {
        let text = chain(e);
        for v in values(e) {
            assert_eq!(text.matches(&v).count(), 1, "{e:?} shows {v:?} not exactly once: {text}");
        }
    }
}

/// A writer refuses exactly what a reader refuses, before writing.
#[test]
fn writer_limits_are_the_reader_limits() {
    check_writer_limits(
        MAX_SNAPSHOTS,
        MAX_STORED_PAGES,
        MAX_STORED_PAGES,
        MAX_FRAMES_LENGTH,
        MAX_INDEX_LENGTH,
    )
    .unwrap();
    let cases: [(&str, [u64; 5]); 5] = [
        ("snapshot count", [MAX_SNAPSHOTS + 1, 0, 0, 0, 0]),
        ("page record count", [1, MAX_STORED_PAGES + 1, 0, 0, 0]),
        ("frame count", [1, 0, MAX_STORED_PAGES + 1, 0, 0]),
        ("frame area length", [1, 0, 0, MAX_FRAMES_LENGTH + 1, 0]),
        ("index length", [1, 0, 0, 0, MAX_INDEX_LENGTH + 1]),
    ];
    for (name, [a, b, c, d, e]) in cases {
        match check_writer_limits(a, b, c, d, e) {
            Err(FileError::SizeLimit { what, .. }) => assert_eq!(what, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}
