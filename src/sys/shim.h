/* SPDX-License-Identifier: GPL-2.0 */
/* What shim.c gives the Rust side (declared again in shim.rs). */
#ifndef RAIDMIG_SHIM_H
#define RAIDMIG_SHIM_H

#include <linux/blkdev.h>

const char *raidmig_param_members(void);
const char *raidmig_param_level(void);
unsigned int raidmig_param_chunk_kb(void);
bool raidmig_param_start(void);
bool raidmig_param_force(void);
bool raidmig_param_assume_clean(void);
unsigned int raidmig_param_checkpoint_units(void);
unsigned int raidmig_param_checkpoint_ms(void);
unsigned int raidmig_param_bitmap_region_mb(void);
unsigned int raidmig_param_speed_limit_max_kbps(void);
void raidmig_bio_copy(struct bio *bio, unsigned int skip, void *buf, unsigned int len, bool to_bio);
struct blk_plug *raidmig_plug_take(void);
void raidmig_plug_restore(struct blk_plug *plug);
void raidmig_flush_vmap(void *addr, int len);
void raidmig_limits_start_update(struct request_queue *q, struct queue_limits *lim);
void raidmig_invalidate_vmap(void *addr, int len);

extern const blk_features_t raidmig_feat_write_cache;
extern const blk_features_t raidmig_feat_fua;
extern const blk_mode_t raidmig_open_rw_excl;
extern const blk_status_t raidmig_sts_ioerr;
extern const blk_status_t raidmig_sts_notsupp;
extern const gfp_t raidmig_gfp_noio;

#endif
