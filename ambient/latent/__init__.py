"""The SDXL (latent diffusion) branch of the papers, on diffusers + peft (issue 13).

Modules: `tiny` (random-weight tiny SDXL components for offline/CPU runs), `models` (loading from a
local path or the local Hugging Face cache, never downloading), `tweedie` (the latent Tweedie loss
and the DDIM sampler), `lora` (LoRA fine-tuning with that loss, resumable), `generate`
(early-stopped / full-length sampling), `attacks` (noise and inpainting attacks), `scoring`
(similarity histograms); the `ambient sdxl-*` commands are in `ambient/cli/sdxl.py`.
Everything heavy (diffusers, peft, transformers) is imported inside these modules only, so the
pixel branch never needs the `sdxl` extra.
"""
