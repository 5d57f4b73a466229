// SPDX-License-Identifier: GPL-2.0
/*
 * The part of raidmig that Rust cannot reach on 6.12: module parameters
 * (the Rust `module!` macro of 6.12 has no `params:`), static inline
 * helpers, and a few constants that are macros with casts, which bindgen
 * does not translate.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/highmem.h>
#include <linux/module.h>
#include <linux/sched.h>

#include "shim.h"

static char *members;
module_param(members, charp, 0444);
MODULE_PARM_DESC(members, "Comma-separated member block devices, e.g. /dev/sda,/dev/sdb");

static char *level;
module_param(level, charp, 0444);
MODULE_PARM_DESC(level, "Target layout: single, raid0, raid1, raid5 or raid10; unset to assemble from superblocks");

static unsigned int chunk_kb = 64;
module_param(chunk_kb, uint, 0444);
MODULE_PARM_DESC(chunk_kb, "Chunk size in KiB: a power of two from 4 to 4096 (default 64)");

static bool start;
module_param(start, bool, 0444);
MODULE_PARM_DESC(start, "Start the migration at once (default: wait for 'start' in sysfs)");

static bool force;
module_param(force, bool, 0444);
MODULE_PARM_DESC(force, "Take the first member's reserved tail even if it holds data");

static bool assume_clean;
module_param(assume_clean, bool, 0444);
MODULE_PARM_DESC(assume_clean, "With level=: make the array directly in its layout, without migrating the first member's data (for new, empty disks)");

static unsigned int checkpoint_units = 1024;
module_param(checkpoint_units, uint, 0444);
MODULE_PARM_DESC(checkpoint_units, "Checkpoint at the latest after this many units (default 1024)");

static unsigned int checkpoint_ms = 5000;
module_param(checkpoint_ms, uint, 0444);
MODULE_PARM_DESC(checkpoint_ms, "Checkpoint at the latest after this many milliseconds (default 5000)");

static unsigned int bitmap_region_mb = 64;
module_param(bitmap_region_mb, uint, 0444);
MODULE_PARM_DESC(bitmap_region_mb, "With level=: region of the write-intent bitmap in MiB, a power of two (default 64; 0: no bitmap)");

static unsigned int speed_limit_max_kbps;
module_param(speed_limit_max_kbps, uint, 0444);
MODULE_PARM_DESC(speed_limit_max_kbps, "Throttle of the migration, rebuild, resync or scrub in KiB/s from load on (default 0: none; sysfs changes it)");

const char *raidmig_param_members(void) { return members; }
const char *raidmig_param_level(void) { return level; }
unsigned int raidmig_param_chunk_kb(void) { return chunk_kb; }
bool raidmig_param_start(void) { return start; }
bool raidmig_param_force(void) { return force; }
bool raidmig_param_assume_clean(void) { return assume_clean; }
unsigned int raidmig_param_checkpoint_units(void) { return checkpoint_units; }
unsigned int raidmig_param_checkpoint_ms(void) { return checkpoint_ms; }
unsigned int raidmig_param_bitmap_region_mb(void) { return bitmap_region_mb; }
unsigned int raidmig_param_speed_limit_max_kbps(void) { return speed_limit_max_kbps; }

/*
 * Copies between a kernel buffer and the data of a bio, starting @skip bytes
 * into the bio, @len bytes (bio_for_each_segment and the bvec copy helpers
 * are static inline). @to_bio picks the direction.
 */
void raidmig_bio_copy(struct bio *bio, unsigned int skip, void *buf, unsigned int len, bool to_bio)
{
	struct bvec_iter iter = bio->bi_iter;
	struct bio_vec bv;

	bio_advance_iter(bio, &iter, skip);
	iter.bi_size = len;
	__bio_for_each_segment(bv, bio, iter, iter) {
		if (to_bio)
			memcpy_to_bvec(&bv, buf);
		else
			memcpy_from_bvec(buf, &bv);
		buf += bv.bv_len;
	}
}

/*
 * Sets the calling task's block plug aside (returned) or puts it back:
 * current->plug behind get_current(). See bio.rs, plugged_apart().
 */
struct blk_plug *raidmig_plug_take(void)
{
	struct blk_plug *plug = current->plug;

	current->plug = NULL;
	return plug;
}

void raidmig_plug_restore(struct blk_plug *plug) { current->plug = plug; }

/*
 * Cache maintenance around I/O on vmalloc memory (static inline, no-ops on
 * x86): flush before the device reads or writes the pages, invalidate after
 * it wrote them, so that the vmap alias never sees stale lines.
 */
void raidmig_flush_vmap(void *addr, int len) { flush_kernel_vmap_range(addr, len); }
void raidmig_invalidate_vmap(void *addr, int len) { invalidate_kernel_vmap_range(addr, len); }

/* The start of an update of a live queue's limits (static inline). */
void raidmig_limits_start_update(struct request_queue *q, struct queue_limits *lim)
{
	*lim = queue_limits_start_update(q);
}

const blk_features_t raidmig_feat_write_cache = BLK_FEAT_WRITE_CACHE;
const blk_features_t raidmig_feat_fua = BLK_FEAT_FUA;
const blk_mode_t raidmig_open_rw_excl = BLK_OPEN_READ | BLK_OPEN_WRITE | BLK_OPEN_EXCL;
const blk_status_t raidmig_sts_ioerr = BLK_STS_IOERR;
const blk_status_t raidmig_sts_notsupp = BLK_STS_NOTSUPP;
const gfp_t raidmig_gfp_noio = GFP_NOIO;
