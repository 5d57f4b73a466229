//! Validation of what the user asks for at load time (module parameters),
//! before anything is opened or written.

use super::layout::{Level, MAX_CHUNK_SECTORS, MAX_MEMBERS, MIN_CHUNK_SECTORS, SECTOR_SHIFT};

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
        }
    }
}

/// The member paths of `members=`, in the order given.
#[derive(Clone, Copy, Debug)]
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
    if !sectors.is_power_of_two() || !(MIN_CHUNK_SECTORS..=MAX_CHUNK_SECTORS).contains(&sectors) {
        return Err(ConfigError::BadChunk);
    }
    Ok(sectors)
}

/// The first pair of indices `(i, j)`, `i < j`, whose items are equal.
pub fn first_duplicate<T: PartialEq>(items: &[T]) -> Option<(usize, usize)> {
    (0..items.len()).find_map(|j| (0..j).find(|&i| items[i] == items[j]).map(|i| (i, j)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn duplicates_found() {
        assert_eq!(first_duplicate(&[1, 2, 3]), None);
        assert_eq!(first_duplicate(&[1, 2, 1]), Some((0, 2)));
        assert_eq!(first_duplicate(&[5, 2, 2, 5]), Some((1, 2)));
        assert_eq!(first_duplicate::<u8>(&[]), None);
    }
}
