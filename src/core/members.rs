//! Who the members of an array are: what every superblock update repeats
//! per member (member UUID, device size) besides the array-wide fields.

use super::format::Superblock;
use super::layout::MAX_MEMBERS;

/// Identity of an array and of each of its members, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayMembers {
    /// The array's UUID.
    pub array_uuid: [u8; 16],
    /// When the array was made (ms since the epoch).
    pub created_ms: u64,
    /// Number of members.
    pub count: usize,
    /// Member UUID by role.
    pub uuids: [[u8; 16]; MAX_MEMBERS],
    /// Device size in sectors by role (locates each member's tail).
    pub device_sectors: [u64; MAX_MEMBERS],
}

impl ArrayMembers {
    /// An array of `device_sectors.len()` members (at most [`MAX_MEMBERS`])
    /// with the given UUIDs (the kernel draws them at random).
    pub fn new(
        array_uuid: [u8; 16],
        created_ms: u64,
        member_uuids: &[[u8; 16]],
        device_sectors: &[u64],
    ) -> ArrayMembers {
        debug_assert_eq!(member_uuids.len(), device_sectors.len());
        let count = device_sectors.len().min(member_uuids.len()).min(MAX_MEMBERS);
        let mut m = ArrayMembers {
            array_uuid,
            created_ms,
            count,
            uuids: [[0; 16]; MAX_MEMBERS],
            device_sectors: [0; MAX_MEMBERS],
        };
        // Element by element: `copy_from_slice` panics on a length mismatch
        // through a function the kernel's objtool does not know as noreturn.
        for (d, s) in m.uuids.iter_mut().zip(member_uuids).take(count) {
            *d = *s;
        }
        for (d, s) in m.device_sectors.iter_mut().zip(device_sectors).take(count) {
            *d = *s;
        }
        m
    }

    /// Records a member's identity from its superblock (assembly).
    pub fn set_from(&mut self, sb: &Superblock) {
        if sb.role < MAX_MEMBERS {
            self.uuids[sb.role] = sb.member_uuid;
            self.device_sectors[sb.role] = sb.device_sectors;
        }
    }
}
