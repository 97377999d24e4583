"""Models: image encoders (pretrained, frozen), prompt encoder + mask decoder, registry and weights."""
from synthfm.models.sam import DecoderOutput, PromptableModel, build_mask_decoder, build_prompt_encoder

__all__ = ["PromptableModel", "DecoderOutput", "build_mask_decoder", "build_prompt_encoder"]
