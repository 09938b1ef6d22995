# The paper's ablations, one target each (included from the Makefile).
# Each target queues one DVC experiment per variant (`dvc exp run --queue -n <name> -S key=value`),
# runs the queue, saves `dvc exp show --json` and builds reports/ablations/<table>.{md,csv} from the
# experiments' metrics/eval/*.json. Stages whose inputs a variant does not change come from DVC's
# run cache. Re-running a target replaces its experiments (same names).
#   make ablation-table9            # one table
#   make ablations                  # all of them, one after the other
DVC ?= dvc
ABL_PYTHON ?= $(if $(BIN),$(BIN)/python,python)
ABL_JOBS ?= 1
ABL_DIR ?= reports/ablations

ABLATION_TARGETS := ablation-table1 ablation-table2 ablation-table3 ablation-table4 ablation-table9 \
                    ablation-table11 ablation-table12 ablation-table13 ablation-table14 ablation-table15 \
                    ablation-table18 ablation-table19 ablation-table20 ablation-patch_layers
.PHONY: ablations $(ABLATION_TARGETS)

# $(call abl_queue,<experiment name>,<-S overrides>)
define abl_queue
	@$(DVC) exp remove $(1) >/dev/null 2>&1 || true
	$(DVC) exp run --queue -n $(1) $(2)
endef

# $(call abl_finish,<table>,<experiment names in row order>)
# A failed variant does not stop the table: it shows as "not found" and the target exits non-zero.
define abl_finish
	-$(DVC) exp run --run-all --jobs $(ABL_JOBS)
	@mkdir -p $(ABL_DIR)
	$(DVC) exp show --json > $(ABL_DIR)/$(1).exp.json
	$(ABL_PYTHON) -m gazevlm.evaluate.ablations $(1) $(ABL_DIR)/$(1).exp.json $(2) --out $(ABL_DIR)
endef

ablations: $(ABLATION_TARGETS)

# Table 1: every backbone at its tiny preset (the committed params are openflamingo: its stages come
# from DVC's run cache); `-S model.preset=<real preset>` on a GPU machine for the paper-sized rows
ablation-table1:
	$(call abl_queue,t1-openflamingo,-S model.backbone=openflamingo)
	$(call abl_queue,t1-openflamingo_noperceiver,-S model.backbone=openflamingo_noperceiver)
	$(call abl_queue,t1-lavila,-S model.backbone=lavila)
	$(call abl_queue,t1-internvl,-S model.backbone=internvl)
	$(call abl_queue,t1-llava_next,-S model.backbone=llava_next)
	$(call abl_finish,table1,t1-openflamingo t1-openflamingo_noperceiver t1-lavila t1-internvl t1-llava_next)

# Table 2: gaze-loss weight lambda 0 / 100 / 1000
ablation-table2:
	$(call abl_queue,t2-lambda0,-S runs.gaze.lambda=0)
	$(call abl_queue,t2-lambda100,-S runs.gaze.lambda=100)
	$(call abl_queue,t2-lambda1000,-S runs.gaze.lambda=1000)
	$(call abl_finish,table2,t2-lambda0 t2-lambda100 t2-lambda1000)

# Table 3: anticipation horizon tau_a 2 s vs 5 s
ablation-table3:
	$(call abl_queue,t3-tau2,-S extract.future_horizon_s=2)
	$(call abl_queue,t3-tau5,-S extract.future_horizon_s=5)
	$(call abl_finish,table3,t3-tau2 t3-tau5)

# Table 4: zero-shot on EGTEA Gaze+. Not a DVC experiment: nothing is trained for it. The default models and
# their in-domain scores are brought up to date (`dvc repro evaluate`: nothing to do after `make repro`), then
# gazevlm.zeroshot writes the EGTEA-layout world of params `sample_egtea` (when `zeroshot.root` is it), runs
# extract / annotate / heatmaps on it inside `zeroshot.workdir` and evaluates every run and seed there; the
# default pipeline's outputs are not touched.
ablation-table4:
	$(DVC) repro evaluate
	$(ABL_PYTHON) -m gazevlm.zeroshot --params params.yaml --out $(ABL_DIR)

# Table 9: single-point vs aggregated heatmaps, sigma 20 vs 50 px
ablation-table9:
	$(call abl_queue,t9-single-s20,-S heatmaps.aggregate=false -S heatmaps.sigma_px=20)
	$(call abl_queue,t9-single-s50,-S heatmaps.aggregate=false -S heatmaps.sigma_px=50)
	$(call abl_queue,t9-agg-s20,-S heatmaps.aggregate=true -S heatmaps.sigma_px=20)
	$(call abl_queue,t9-agg-s50,-S heatmaps.aggregate=true -S heatmaps.sigma_px=50)
	$(call abl_finish,table9,t9-single-s20 t9-single-s50 t9-agg-s20 t9-agg-s50)

# Table 11: 6 vs 12 aggregated points (delta 200 vs 400 ms at 30 fps)
ablation-table11:
	$(call abl_queue,t11-delta200,-S heatmaps.delta_ms=200)
	$(call abl_queue,t11-delta400,-S heatmaps.delta_ms=400)
	$(call abl_finish,table11,t11-delta200 t11-delta400)

# Table 12: occlusion filter off vs on
ablation-table12:
	$(call abl_queue,t12-occlusion-off,-S heatmaps.occlusion_filter=false)
	$(call abl_queue,t12-occlusion-on,-S heatmaps.occlusion_filter=true)
	$(call abl_finish,table12,t12-occlusion-off t12-occlusion-on)

# Table 14: the block without the gaze loss: one experiment adds the run `lambda0` (block on, lambda 0; `++`
# adds the key; base and gaze come from DVC's run cache) and gives base / lambda0 / gaze rows.
ablation-table14:
	$(call abl_queue,t14-runs,-S ++runs.lambda0.block=true)
	$(call abl_finish,table14,t14-runs)

# Not a paper table: 0, 1 or 2 trainable transformer layers over each frame's patches first in the gaze block
# (model.block_patch_layers; 0 is the paper's block, 2 the default). Base is retrained too (the train stages read
# the whole model section) and must come out the same in every row
ablation-patch_layers:
	$(call abl_queue,pl-0,-S model.block_patch_layers=0)
	$(call abl_queue,pl-1,-S model.block_patch_layers=1)
	$(call abl_queue,pl-2,-S model.block_patch_layers=2)
	$(call abl_finish,patch_layers,pl-0 pl-1 pl-2)

# Table 19: global vs frame-level query
ablation-table19:
	$(call abl_queue,t19-global,-S model.query=global)
	$(call abl_queue,t19-frame,-S model.query=frame)
	$(call abl_finish,table19,t19-global t19-frame)

# Table 13: gaze given to the model as text, "gaze: (0.42, 0.61); none; ..." in the prompt at training and test
# time: one experiment adds the run `gaze_text` (`++` adds the key; base, lambda0 and gaze come from DVC's run
# cache); rows base / gaze_text / gaze (future task)
ablation-table13:
	$(call abl_queue,t13-runs,-S ++runs.gaze_text.gaze_text=true)
	$(call abl_finish,table13,t13-runs)

# Table 15: frames with the gaze heatmap painted over them, at training and test time: the run `gaze_overlay`
ablation-table15:
	$(call abl_queue,t15-runs,-S ++runs.gaze_overlay.gaze_overlay=true)
	$(call abl_finish,table15,t15-runs)

# Table 18: the activity task from one static frame (a 1 s window: one keyframe, the last observed) vs the
# 3-frame window of the committed params (run cache), base vs gaze
ablation-table18:
	$(call abl_queue,t18-one-frame,-S extract.activity_observe_s=1)
	$(call abl_queue,t18-three-frames,-S extract.activity_observe_s=3)
	$(call abl_finish,table18,t18-one-frame t18-three-frames)

# Table 20: coarse future targets (the horizon's raw narrations) vs the fine captions of the committed params
ablation-table20:
	$(call abl_queue,t20-narrations,-S annotate.future_targets=narrations)
	$(call abl_queue,t20-captions,-S annotate.future_targets=captions)
	$(call abl_finish,table20,t20-narrations t20-captions)
