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
use super::engine::{Engine, EngineConfig, EngineError};
use super::format::ArrayState;
use super::layout::Geometry;
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
