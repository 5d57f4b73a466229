//! Crash recovery: from the assembled superblocks, the state to resume from.
//!
//! Nothing but the newest superblock is needed. Its migration record says
//! which units are durable in the target layout (those below the checkpoint)
//! and whether the checkpoint unit sits complete in the staging areas. The
//! engine resumes by finishing a staged unit (copying staging to its rows,
//! which can be repeated any number of times since staging is not written
//! again before a superblock saying "staging empty" is durable), then copies
//! again every unit from the checkpoint on, reading the source.
//!
//! First, members whose superblock lags one generation behind (a power cut
//! during a superblock update) are brought level ([`catch_up`]): the newest
//! superblock is written, at the same generation, to the slot of each lagging
//! member that holds an older one, then flushed. Every later update then
//! starts from members all at one generation, so however often the power
//! fails, members never drift more than one generation apart, and a bigger
//! gap means a member that truly missed updates (refused by assembly).
//!
//! Why the source of those units is intact: a unit's rows are written only
//! after (a) a durable checkpoint past every earlier unit whose source they
//! overwrite, and (b) if they overwrite the unit's own source, a durable
//! record of the unit in staging, whose completion moves the checkpoint past
//! it; rows never overwrite source data of later units (such units are
//! refused, see [`super::plan`]). So a source sector of a unit at or after
//! the durable checkpoint has only ever been rewritten with its own contents.
//! Host writes there went to the source layout (not yet reached) or waited
//! (unit in flight); host writes into copied units not yet checkpointed
//! waited for a checkpoint, so none of them is lost by copying again.

use super::assemble::Assembly;
use super::engine::{Engine, EngineConfig, EngineError, IoError, MemberIo};
use super::format::{slot_of, superblock_sector, ArrayState, Superblock, SUPERBLOCK_BYTES};
use super::layout::Geometry;
use super::members::ArrayMembers;
use super::route::View;

/// What an assembled array needs.
#[derive(Clone, Copy, Debug)]
pub enum Recovered {
    /// No migration: the array is in `layout`, in `state` (clean or failed).
    Settled {
        /// The array's layout.
        layout: Geometry,
        /// Its state.
        state: ArrayState,
    },
    /// A migration to run (or paused, or failed with its record): the engine
    /// resumes it at its first step.
    Migration(Engine),
}

impl Recovered {
    /// The view host I/O starts with.
    pub fn view(&self) -> View {
        match self {
            Recovered::Settled { layout, state } => View::clean(*state, layout.capacity()),
            Recovered::Migration(e) => e.view(),
        }
    }
}

/// The state to resume from, given the assembled array.
pub fn recover(assembly: &Assembly, config: EngineConfig, now_ms: u64) -> Result<Recovered, EngineError> {
    let sb = &assembly.newest;
    match sb.migration {
        None => Ok(Recovered::Settled { layout: sb.layout, state: sb.state }),
        Some(_) => Engine::resume(sb, config, now_ms).map(Recovered::Migration),
    }
}

/// Brings lagging members level with the newest superblock (same
/// generation, their own identity), then flushes; does nothing when no member
/// lags. `buf` must hold at least [`SUPERBLOCK_BYTES`].
pub fn catch_up<I: MemberIo>(
    io: &mut I,
    assembly: &Assembly,
    members: &ArrayMembers,
    buf: &mut [u8],
) -> Result<(), EngineError> {
    if assembly.lagging == 0 {
        return Ok(());
    }
    let buf = buf.get_mut(..SUPERBLOCK_BYTES).ok_or(EngineError::BufferTooSmall)?;
    let newest = &assembly.newest;
    let slot = slot_of(newest.generation);
    for role in 0..members.count {
        if assembly.lagging & (1 << role) == 0 {
            continue;
        }
        let sb = Superblock {
            member_uuid: members.uuids[role],
            role,
            device_sectors: members.device_sectors[role],
            ..*newest
        };
        sb.encode(buf).map_err(EngineError::Format)?;
        io.write(role, superblock_sector(sb.device_sectors, slot), buf).map_err(EngineError::Io)?;
    }
    io.flush().map_err(|e: IoError| EngineError::Io(e))
}
