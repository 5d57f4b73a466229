//! Validation of what the user asks for: module parameters at load time,
//! before anything is opened or written, and what is written to the sysfs
//! knobs while the array runs. Anything out of range, negative, empty,
//! non-numeric, overlong or not UTF-8 is refused and changes nothing.
//!
//! Keeps invariant 7 of the theory (see the crate documentation).

use super::layout::{valid_chunk, Level, MAX_MEMBERS, SECTOR_SHIFT};

/// Why a load request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `members=` is missing or empty.
    NoMembers,
    /// `members=` has an empty entry (`a,,b` or a trailing comma).
    EmptyMemberPath,
    /// More members than an array can have.
    TooManyMembers,
    /// `level=` names no level raidmig knows.
    UnknownLevel,
    /// `chunk_kb=` is not a power of two from 4 to 4096.
    BadChunk,
    /// A sysfs write that is not one of the words the knob takes.
    BadCommand,
    /// A sysfs write that is not a decimal number in the knob's range.
    BadNumber,
    /// A sysfs write that is not an absolute device path.
    BadPath,
    /// `speed_limit_max_kbps=` above [`MAX_SPEED_LIMIT_KBPS`].
    BadSpeedLimit,
    /// A write to `reshape` that is not words `level=`, `add=`, `chunk_kb=`,
    /// each at most once.
    BadReshape,
}

impl ConfigError {
    /// A sentence for the kernel log.
    pub fn message(self) -> &'static str {
        match self {
            ConfigError::NoMembers => "no members given (members=/dev/sdX,...)",
            ConfigError::EmptyMemberPath => "empty member path in members=",
            ConfigError::TooManyMembers => "too many members (at most 16)",
            ConfigError::UnknownLevel => "unknown level (use single, raid0, raid1, raid5, raid10)",
            ConfigError::BadChunk => "chunk_kb must be a power of two from 4 to 4096",
            ConfigError::BadCommand => "unknown command (use start, pause, resume, check, repair or idle)",
            ConfigError::BadNumber => "not a decimal number in range",
            ConfigError::BadPath => "not a device path (an absolute path, at most 255 bytes, no blanks)",
            ConfigError::BadSpeedLimit => "speed_limit_max_kbps must be at most 1073741824 (0: no limit)",
            ConfigError::BadReshape => {
                "reshape takes words level=LEVEL add=/dev/X[,/dev/Y...] chunk_kb=N, each at most once, \
                 at least one (e.g. \"add=/dev/sdd\" or \"level=raid5 add=/dev/sdc\")"
            }
        }
    }
}

/// The member paths of `members=`, in the order given (the slots past the
/// last hold empty paths, so that equal lists compare equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberPaths<'a> {
    paths: [&'a str; MAX_MEMBERS],
    count: usize,
}

impl<'a> MemberPaths<'a> {
    /// The paths.
    pub fn as_slice(&self) -> &[&'a str] {
        &self.paths[..self.count]
    }
}

/// Splits a comma-separated member list; blanks around entries are dropped.
pub fn parse_members(list: &str) -> Result<MemberPaths<'_>, ConfigError> {
    let list = list.trim();
    if list.is_empty() {
        return Err(ConfigError::NoMembers);
    }
    let mut out = MemberPaths { paths: [""; MAX_MEMBERS], count: 0 };
    for entry in list.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(ConfigError::EmptyMemberPath);
        }
        if out.count == MAX_MEMBERS {
            return Err(ConfigError::TooManyMembers);
        }
        out.paths[out.count] = entry;
        out.count += 1;
    }
    Ok(out)
}

/// Parses `level=`.
pub fn parse_level(name: &str) -> Result<Level, ConfigError> {
    Level::from_name(name.trim()).ok_or(ConfigError::UnknownLevel)
}

/// Converts `chunk_kb=` to sectors, checking that it is a power of two
/// within the supported range.
pub fn chunk_sectors_from_kb(kb: u32) -> Result<u32, ConfigError> {
    let sectors = kb.checked_mul(1024 >> SECTOR_SHIFT).ok_or(ConfigError::BadChunk)?;
    Some(sectors).filter(|&s| valid_chunk(s)).ok_or(ConfigError::BadChunk)
}

/// Largest migration speed limit, in KiB/s (about 1 TiB/s): far above any
/// device, and small enough that every computation with it stays exact.
pub const MAX_SPEED_LIMIT_KBPS: u64 = 1 << 30;

/// Checks `speed_limit_max_kbps=`, the throttle a migration, rebuild,
/// resync or scrub starts with (0: none): given at load, it holds from the
/// first unit, before a write to sysfs could.
pub fn speed_limit_from_param(kbps: u32) -> Result<u64, ConfigError> {
    Some(u64::from(kbps)).filter(|&k| k <= MAX_SPEED_LIMIT_KBPS).ok_or(ConfigError::BadSpeedLimit)
}

/// Longest input a sysfs knob accepts, in bytes.
pub const MAX_KNOB_INPUT: usize = 64;

/// A command written to the `action` knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a prepared migration.
    Start,
    /// Pause (with a checkpoint).
    Pause,
    /// Resume a paused or halted migration.
    Resume,
    /// Scrub: read every stripe and count mismatches (md's `check`).
    Check,
    /// Scrub and rewrite mismatched copies or parity (md's `repair`).
    Repair,
    /// Stop a scrub (md's `idle`).
    Idle,
}

/// The text of a sysfs write: UTF-8, at most [`MAX_KNOB_INPUT`] bytes, one
/// trailing newline and surrounding blanks dropped, not empty.
fn knob_text(input: &[u8], err: ConfigError) -> Result<&str, ConfigError> {
    if input.len() > MAX_KNOB_INPUT {
        return Err(err);
    }
    let text = core::str::from_utf8(input).map_err(|_| err)?;
    let text = text.strip_suffix('\n').unwrap_or(text).trim_matches(' ');
    if text.is_empty() {
        return Err(err);
    }
    Ok(text)
}

/// Parses a write to `action`.
pub fn parse_command(input: &[u8]) -> Result<Command, ConfigError> {
    match knob_text(input, ConfigError::BadCommand)? {
        "start" => Ok(Command::Start),
        "pause" => Ok(Command::Pause),
        "resume" => Ok(Command::Resume),
        "check" => Ok(Command::Check),
        "repair" => Ok(Command::Repair),
        "idle" => Ok(Command::Idle),
        _ => Err(ConfigError::BadCommand),
    }
}

/// Parses a write of a decimal number from 0 to `max` (digits only: no
/// sign, no exponent, no blanks inside).
pub fn parse_number(input: &[u8], max: u64) -> Result<u64, ConfigError> {
    let text = knob_text(input, ConfigError::BadNumber)?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::BadNumber);
    }
    match text.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(ConfigError::BadNumber),
    }
}

/// Parses a write of a device path (`add`): absolute, at most 255 bytes,
/// no blanks or control characters inside.
pub fn parse_device_path(input: &[u8]) -> Result<&str, ConfigError> {
    let text = knob_text(input, ConfigError::BadPath)?;
    if !text.starts_with('/') || text.len() > 255 || text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ConfigError::BadPath);
    }
    Ok(text)
}

/// What a write to `remove` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveTarget<'a> {
    /// Every faulty member (md's `failed` keyword): also those whose device
    /// node is gone (a disk pulled).
    Failed,
    /// The device at this path.
    Path(&'a str),
}

/// Parses a write to `remove`: a device path or `failed`.
pub fn parse_remove(input: &[u8]) -> Result<RemoveTarget<'_>, ConfigError> {
    if knob_text(input, ConfigError::BadPath)? == "failed" {
        return Ok(RemoveTarget::Failed);
    }
    parse_device_path(input).map(RemoveTarget::Path)
}

/// Parses a write to `speed_limit_max_kbps`.
pub fn parse_speed_limit(input: &[u8]) -> Result<u64, ConfigError> {
    parse_number(input, MAX_SPEED_LIMIT_KBPS)
}

/// Longest input `reshape` accepts, in bytes (device paths are long).
pub const MAX_RESHAPE_INPUT: usize = 4000;

/// What a write to `reshape` asks for; what it leaves out stays as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReshapeSpec<'a> {
    /// `level=`: the new level.
    pub level: Option<Level>,
    /// `add=`: the devices added, in role order after the current members.
    pub add: Option<MemberPaths<'a>>,
    /// `chunk_kb=`, in sectors: the new chunk.
    pub chunk_sectors: Option<u32>,
}

impl ReshapeSpec<'_> {
    /// The devices added (none if `add=` was not given).
    pub fn added(&self) -> &[&str] {
        self.add.as_ref().map_or(&[], |a| a.as_slice())
    }
}

/// Parses a write to `reshape`: blank-separated words `level=LEVEL`,
/// `add=PATH[,PATH...]` and `chunk_kb=N`, each at most once, at least one.
/// Paths as [`parse_device_path`] takes them, `chunk_kb` as
/// [`chunk_sectors_from_kb`].
pub fn parse_reshape(input: &[u8]) -> Result<ReshapeSpec<'_>, ConfigError> {
    let bad = ConfigError::BadReshape;
    if input.len() > MAX_RESHAPE_INPUT {
        return Err(bad);
    }
    let text = core::str::from_utf8(input).map_err(|_| bad)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    // Words are separated by spaces alone.
    if text.contains(|c: char| c.is_whitespace() && c != ' ') {
        return Err(bad);
    }
    let none = ReshapeSpec { level: None, add: None, chunk_sectors: None };
    let mut spec = none;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = word.split_once('=').ok_or(bad)?;
        match key {
            // A level or chunk out of range says which are valid.
            "level" if spec.level.is_none() => spec.level = Some(parse_level(value)?),
            "chunk_kb" if spec.chunk_sectors.is_none() => {
                let kb = parse_number(value.as_bytes(), u32::MAX as u64).map_err(|_| ConfigError::BadChunk)?;
                spec.chunk_sectors = Some(chunk_sectors_from_kb(u32::try_from(kb).unwrap_or(0))?);
            }
            "add" if spec.add.is_none() => {
                let paths = parse_members(value).map_err(|_| bad)?;
                if paths.as_slice().iter().any(|p| parse_device_path(p.as_bytes()).is_err())
                    || first_duplicate(paths.as_slice()).is_some()
                {
                    return Err(bad);
                }
                spec.add = Some(paths);
            }
            _ => return Err(bad),
        }
    }
    // Every word sets a field: none set, no word.
    if spec == none {
        return Err(bad);
    }
    Ok(spec)
}

/// The first pair of indices `(i, j)`, `i < j`, whose items are equal.
pub fn first_duplicate<T: PartialEq>(items: &[T]) -> Option<(usize, usize)> {
    (0..items.len()).find_map(|j| (0..j).find(|&i| items[i] == items[j]).map(|i| (i, j)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_takes_level_add_and_chunk() {
        let s = parse_reshape(b"level=raid5 add=/dev/sdd,/dev/sde chunk_kb=128\n").unwrap();
        assert_eq!((s.level, s.chunk_sectors), (Some(Level::Raid5), Some(256)));
        assert_eq!(s.added(), ["/dev/sdd", "/dev/sde"]);
        let s = parse_reshape(b"  add=/dev/sdd  ").unwrap();
        assert_eq!((s.level, s.chunk_sectors, s.added()), (None, None, &["/dev/sdd"][..]));
        let s = parse_reshape(b"chunk_kb=4096").unwrap();
        assert_eq!((s.level, s.chunk_sectors, s.added().len()), (None, Some(8192), 0));
        // A long path list fits (up to MAX_RESHAPE_INPUT bytes).
        let long = "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00005-part1";
        let mut text = std::string::String::from("add=");
        for i in 0..15 {
            text += &std::format!("{}{long}{i}", if i > 0 { "," } else { "" });
        }
        assert_eq!(parse_reshape(text.as_bytes()).unwrap().added().len(), 15);
        for bad in [
            &b""[..],
            b"\n",
            b"raid5",
            b"level=raid5 level=raid0",
            b"add=",
            b"add=/dev/sdd,",
            b"add=sdd",
            b"add=/dev/sdd,/dev/sdd",
            b"add=/dev/sdd add=/dev/sde",
            b"size=10",
            b"level = raid5",
            b"level=raid5\tadd=/dev/sdd",
            b"\xff",
        ] {
            assert_eq!(parse_reshape(bad), Err(ConfigError::BadReshape), "{:?}", core::str::from_utf8(bad));
        }
        assert_eq!(parse_reshape(&[b' '; MAX_RESHAPE_INPUT + 1]), Err(ConfigError::BadReshape));
        // A level or chunk out of range is told as such.
        assert_eq!(parse_reshape(b"level=raid6"), Err(ConfigError::UnknownLevel));
        for bad in [&b"chunk_kb=3"[..], b"chunk_kb=8192", b"chunk_kb=-4", b"chunk_kb=", b"chunk_kb=4294967296"] {
            assert_eq!(parse_reshape(bad), Err(ConfigError::BadChunk), "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn remove_takes_a_path_or_failed() {
        assert_eq!(parse_remove(b"failed\n"), Ok(RemoveTarget::Failed));
        assert_eq!(parse_remove(b"/dev/sdb\n"), Ok(RemoveTarget::Path("/dev/sdb")));
        assert_eq!(parse_remove(b"sdb"), Err(ConfigError::BadPath));
        assert_eq!(parse_remove(b"failed now"), Err(ConfigError::BadPath));
        assert_eq!(parse_remove(b""), Err(ConfigError::BadPath));
    }

    #[test]
    fn members_split_and_trim() {
        let m = parse_members(" /dev/sda, /dev/sdb ,/dev/sdc\n").unwrap();
        assert_eq!(m.as_slice(), &["/dev/sda", "/dev/sdb", "/dev/sdc"]);
        assert_eq!(parse_members("").unwrap_err(), ConfigError::NoMembers);
        assert_eq!(parse_members("/dev/sda,,/dev/sdb").unwrap_err(), ConfigError::EmptyMemberPath);
        assert_eq!(parse_members("/dev/sda,").unwrap_err(), ConfigError::EmptyMemberPath);
        let many = "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q";
        assert_eq!(parse_members(many).unwrap_err(), ConfigError::TooManyMembers);
        assert_eq!(parse_members(&many[2..]).unwrap().as_slice().len(), 16);
    }

    #[test]
    fn chunk_must_be_power_of_two_in_range() {
        assert_eq!(chunk_sectors_from_kb(64), Ok(128));
        assert_eq!(chunk_sectors_from_kb(4), Ok(8));
        assert_eq!(chunk_sectors_from_kb(4096), Ok(8192));
        for bad in [0, 1, 2, 3, 48, 100, 8192, u32::MAX] {
            assert_eq!(chunk_sectors_from_kb(bad), Err(ConfigError::BadChunk), "{bad}");
        }
    }

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("raid0"), Ok(Level::Raid0));
        assert_eq!(parse_level("single\n"), Ok(Level::Single));
        assert_eq!(parse_level(" raid10"), Ok(Level::Raid10));
        assert_eq!(parse_level("raid7"), Err(ConfigError::UnknownLevel));
        for l in Level::ALL {
            assert!(ConfigError::UnknownLevel.message().contains(l.name()));
        }
    }

    #[test]
    fn knob_input() {
        assert_eq!(parse_command(b"start\n"), Ok(Command::Start));
        assert_eq!(parse_command(b" pause "), Ok(Command::Pause));
        assert_eq!(parse_command(b"resume"), Ok(Command::Resume));
        assert_eq!(parse_command(b"check\n"), Ok(Command::Check));
        assert_eq!(parse_command(b"repair"), Ok(Command::Repair));
        assert_eq!(parse_command(b"idle"), Ok(Command::Idle));
        for bad in [&b""[..], b"\n", b"stop", b"start start", b"\xff\xfe", b"Start", b"start\n\n"] {
            assert_eq!(parse_command(bad), Err(ConfigError::BadCommand), "{bad:?}");
        }
        assert_eq!(parse_command(&[b's'; 5000]), Err(ConfigError::BadCommand));
        assert_eq!(parse_speed_limit(b"0\n"), Ok(0));
        assert_eq!(parse_speed_limit(b"8192"), Ok(8192));
        assert_eq!(parse_speed_limit(b"1073741824"), Ok(MAX_SPEED_LIMIT_KBPS));
        for bad in [
            &b""[..],
            b"-1",
            b"abc",
            b"1e3",
            b"+5",
            b"1 000",
            b"1073741825",
            b"18446744073709551615",
            b"99999999999999999999999",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_speed_limit(bad), Err(ConfigError::BadNumber), "{bad:?}");
        }
        assert_eq!(parse_speed_limit(&[b'1'; 5000]), Err(ConfigError::BadNumber));
        assert!(!ConfigError::BadNumber.message().is_empty());
        assert_eq!(speed_limit_from_param(0), Ok(0));
        assert_eq!(speed_limit_from_param(1 << 30), Ok(MAX_SPEED_LIMIT_KBPS));
        assert_eq!(speed_limit_from_param((1 << 30) + 1), Err(ConfigError::BadSpeedLimit));
        assert_eq!(speed_limit_from_param(u32::MAX), Err(ConfigError::BadSpeedLimit));
        assert_eq!(parse_device_path(b"/dev/sdb\n"), Ok("/dev/sdb"));
        assert_eq!(parse_device_path(b"/dev/mapper/m1"), Ok("/dev/mapper/m1"));
        for bad in [&b""[..], b"\n", b"sdb", b"/dev/sd b", b"/dev/sdb\t", b"\xff/dev", b"/dev/\x01"] {
            assert_eq!(parse_device_path(bad), Err(ConfigError::BadPath), "{bad:?}");
        }
        assert_eq!(parse_device_path(&[b'/'; 256]), Err(ConfigError::BadPath));
    }

    #[test]
    fn duplicates_found() {
        assert_eq!(first_duplicate(&[1, 2, 3]), None);
        assert_eq!(first_duplicate(&[1, 2, 1]), Some((0, 2)));
        assert_eq!(first_duplicate(&[5, 2, 2, 5]), Some((1, 2)));
        assert_eq!(first_duplicate::<u8>(&[]), None);
    }
}
