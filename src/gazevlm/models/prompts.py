"""The fixed text around every window: the special tokens and the task prompts. Both the tokenizer
(which must know them) and the text codec (which writes them) read them from here."""
from __future__ import annotations

IMAGE = "<image>"
EOC = "<|endofchunk|>"
PAD = "<pad>"
EOS = "</s>"
BOS = "<s>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE, EOC)

TASK_PROMPTS = {"future": "what happens next:", "activity": "what is happening:"}
IGNORE_INDEX = -100   # label of prompt and padding positions: the loss is on the target only
