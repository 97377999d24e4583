"""Models: image encoders (pretrained, frozen), prompt encoder + mask decoder, registry and weights."""
from synthfm.models.checkpoint import load_decoder_checkpoint, save_decoder_checkpoint
from synthfm.models.loader import build_model, load_model
from synthfm.models.registry import MODEL_REGISTRY, ModelSpec, available_models, user_models_dir
from synthfm.models.sam import DecoderOutput, PromptableModel, build_mask_decoder, build_prompt_encoder

__all__ = [
    "PromptableModel", "DecoderOutput", "build_mask_decoder", "build_prompt_encoder", "MODEL_REGISTRY",
    "ModelSpec", "available_models", "user_models_dir", "build_model", "load_model",
    "save_decoder_checkpoint", "load_decoder_checkpoint",
]
