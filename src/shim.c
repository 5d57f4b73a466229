// SPDX-License-Identifier: GPL-2.0
/*
 * The part of raidmig that Rust cannot reach on 6.12: module parameters
 * (the Rust `module!` macro of 6.12 has no `params:`) and a few constants
 * that are macros with casts, which bindgen does not translate.
 */
#include <linux/blkdev.h>
#include <linux/module.h>

#include "shim.h"

static char *members;
module_param(members, charp, 0444);
MODULE_PARM_DESC(members, "Comma-separated member block devices, e.g. /dev/sda,/dev/sdb");

static char *level;
module_param(level, charp, 0444);
MODULE_PARM_DESC(level, "Layout: single or raid0");

static unsigned int chunk_kb = 64;
module_param(chunk_kb, uint, 0444);
MODULE_PARM_DESC(chunk_kb, "Chunk size in KiB: a power of two from 4 to 4096 (default 64)");

const char *raidmig_param_members(void) { return members; }
const char *raidmig_param_level(void) { return level; }
unsigned int raidmig_param_chunk_kb(void) { return chunk_kb; }

const blk_features_t raidmig_feat_write_cache = BLK_FEAT_WRITE_CACHE;
const blk_features_t raidmig_feat_fua = BLK_FEAT_FUA;
const blk_mode_t raidmig_open_rw_excl = BLK_OPEN_READ | BLK_OPEN_WRITE | BLK_OPEN_EXCL;
const blk_status_t raidmig_sts_ioerr = BLK_STS_IOERR;
const blk_status_t raidmig_sts_notsupp = BLK_STS_NOTSUPP;
const gfp_t raidmig_gfp_noio = GFP_NOIO;
