"""Text models: token ids from a Hugging Face ``tokenizer.json``, and token states pooled into one vector.

A batch of texts is tokenized at once (the tokenizer's Rust side, several
threads), padded to the longest text *of the batch* (not to a fixed length:
padding costs compute in every layer), and fed as int64 ``input_ids``,
``attention_mask`` and ``token_type_ids``, whichever the graph takes. A text the
model cannot take (empty, or longer than ``max_length`` tokens with
``truncate`` off) is reported by position with the reason, so the worker
dead-letters it and embeds the rest of the batch.

``bucket_by_length`` groups waiting requests of similar length into batches, so
that a long text does not make thirty-one short ones pay for its padding;
``pool`` turns ``(batch, sequence, dims)`` token states into one (optionally
unit-length) vector per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from inferstream.errors import ModelError
from inferstream.schemas.records import EmbeddingRequest, InferenceRequest
from inferstream.serving.config import ModelConfig, TextPreprocessing
from inferstream.serving.preprocess import Prepared

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

Pooling = Literal["none", "mean", "cls"]
_EMPTY = np.empty((0, 0), dtype=np.int64)


@dataclass
class TextPrepared(Prepared):
    """``Prepared`` plus what pooling needs whether or not the graph takes it as an input.

    ``attention_mask`` is 1 on real tokens and 0 on padding, one row per fed
    request; ``lengths`` counts the real tokens (special tokens included).
    """

    attention_mask: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY)
    lengths: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))


class TextPreprocessor:
    """Texts → padded int64 token matrices for the graph inputs the model config names.

    The tokenizer is read on ``load()`` (or the first ``prepare()``), never at
    construction. Padding and truncation settings stored in the
    ``tokenizer.json`` are replaced by the model config's: files exported from
    Hugging Face often pad every text to a fixed 128 tokens and silently cut
    longer ones.
    """

    def __init__(self, config: ModelConfig, directory: Path) -> None:
        if not isinstance(config.preprocessing, TextPreprocessing):
            raise ModelError(f"{config.ref}: TextPreprocessor needs text preprocessing, not tabular")
        self.config = config
        self.settings: TextPreprocessing = config.preprocessing
        self.path = directory / self.settings.tokenizer
        self._inputs = [(spec.name, spec.source, np.dtype(spec.dtype)) for spec in config.inputs]
        self._tokenizer: Tokenizer | None = None
        self._specials = 0
        self._pad_id = 0

    @property
    def loaded(self) -> bool:
        """True once the tokenizer is read."""
        return self._tokenizer is not None

    def load(self) -> TextPreprocessor:
        """Read the tokenizer; a clear error when it is missing or unreadable."""
        if self._tokenizer is not None:
            return self
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelError(
                f"{self.config.ref} is a text model and needs the `tokenizers` package "
                f"(pip install 'inferstream[models]'): {exc}"
            ) from None
        where = f"{self.config.ref}, preprocessing.tokenizer"
        if not self.path.is_file():
            raise ModelError(
                f"tokenizer {self.path} does not exist ({where}): put the model's Hugging Face "
                "tokenizer.json beside model.onnx, or rebuild the demo models with `inferstream models build-demo`"
            )
        try:
            tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # tokenizers raises plain Exceptions from Rust
            raise ModelError(f"cannot read tokenizer {self.path} ({where}): {exc}") from None
        padding = tokenizer.padding or {}
        self._pad_id = int(padding.get("pad_id", 0))
        tokenizer.no_padding()  # padded here, to the longest text of each batch
        if self.settings.truncate:
            tokenizer.enable_truncation(self.settings.max_length)
        else:
            tokenizer.no_truncation()  # over-long texts are measured and refused, not cut
        self._specials = tokenizer.num_special_tokens_to_add(is_pair=False)
        self._tokenizer = tokenizer
        return self

    def text_of(self, request: EmbeddingRequest | InferenceRequest) -> str | None:
        """The text a request asks to embed: ``text``, or ``inputs[preprocessing.field]`` (None: none)."""
        text = self._given(request)
        return text if isinstance(text, str) else None

    def _given(self, request: EmbeddingRequest | InferenceRequest) -> Any:
        return request.text if isinstance(request, EmbeddingRequest) else request.inputs.get(self.settings.field)

    def _texts(
        self, requests: Sequence[EmbeddingRequest | InferenceRequest], errors: dict[int, str]
    ) -> tuple[list[str], list[int]]:
        name = self.settings.field
        texts: list[str] = []
        positions: list[int] = []
        for index, request in enumerate(requests):
            text = self._given(request)
            if not isinstance(text, str):
                errors[index] = (
                    f"input {name!r} is missing"
                    if text is None
                    else f"input {name!r} is {type(text).__name__}, not text"
                )
            elif not text or text.isspace():
                errors[index] = "text is empty"
            else:
                texts.append(text)
                positions.append(index)
        return texts, positions

    def _encodings(
        self, texts: list[str], positions: list[int], given: Sequence[Encoding | None] | None
    ) -> list[Encoding]:
        """Each text's encoding: the one ``given`` for its request (tokenised ahead), else encoded now."""
        if given is None:
            return self.encode(texts) if texts else []
        found = [given[p] for p in positions]
        missing = [i for i, encoding in enumerate(found) if encoding is None]
        if missing:
            for i, encoding in zip(missing, self.encode([texts[i] for i in missing]), strict=True):
                found[i] = encoding
        return found  # type: ignore[return-value]

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Token encodings of ``texts``, unpadded (truncated only when the config says so)."""
        tokenizer = self.load()._tokenizer
        assert tokenizer is not None
        return tokenizer.encode_batch(list(texts), add_special_tokens=True)

    def measure(self, texts: Sequence[str]) -> tuple[list[int], dict[int, str]]:
        """Each text's length in tokens as the model sees it (special tokens included), and why it refuses any.

        The refusals (by position) are the ones :meth:`prepare` would give: an empty
        text, one with no tokens, one over ``max_length`` when ``truncate`` is off. A
        caller can answer them at once instead of sending what the worker dead-letters.
        """
        errors = {i: "text is empty" for i, text in enumerate(texts) if not text or text.isspace()}
        lengths = [len(e) for e in self.encode(texts)] if texts else []
        for index, length in enumerate(lengths):
            too_long = not self.settings.truncate and length > self.settings.max_length
            if index not in errors and (length <= self._specials or too_long):
                errors[index] = self._refusal(length)
        return lengths, errors

    def prepare(
        self,
        requests: Sequence[EmbeddingRequest | InferenceRequest],
        encoded: Sequence[Encoding | None] | None = None,
    ) -> TextPrepared:
        """Feeds for every request that fits; reasons for those that do not.

        Reads ``text`` of an ``EmbeddingRequest``, ``inputs[preprocessing.field]``
        of an ``InferenceRequest``. ``encoded`` (one per request, None where there is
        none) are the texts' encodings made ahead by :meth:`encode` (the worker
        tokenises the next requests while the model runs).
        """
        errors: dict[int, str] = {}
        texts, positions = self._texts(requests, errors)
        encodings = self._encodings(texts, positions, encoded)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        keep = lengths > self._specials  # text the normaliser reduced to nothing (control characters)
        if not self.settings.truncate:
            keep &= lengths <= self.settings.max_length
        if not keep.all():
            for row in np.flatnonzero(~keep):
                errors[positions[row]] = self._refusal(int(lengths[row]))
            encodings = [e for e, k in zip(encodings, keep, strict=True) if k]
            positions = [p for p, k in zip(positions, keep, strict=True) if k]
            lengths = lengths[keep]
        width = int(lengths.max()) if len(lengths) else 0
        mask = np.arange(width, dtype=np.int64)[None, :] < lengths[:, None]
        columns: dict[str, npt.NDArray[np.int64]] = {"attention_mask": mask.astype(np.int64)}
        sources = {source for _, source, _ in self._inputs}
        if "input_ids" in sources:
            columns["input_ids"] = _padded(mask.shape, [e.ids for e in encodings], self._pad_id)
        if "token_type_ids" in sources:
            columns["token_type_ids"] = _padded(mask.shape, [e.type_ids for e in encodings], 0)
        feeds: dict[str, npt.NDArray[Any]] = {
            name: columns[source].astype(dtype, copy=False) for name, source, dtype in self._inputs
        }
        return TextPrepared(feeds, positions, errors, attention_mask=columns["attention_mask"], lengths=lengths)

    def _refusal(self, length: int) -> str:
        if length <= self._specials:
            return "text has no tokens (only whitespace or control characters)"
        return (
            f"text is {length} tokens long, over max_length {self.settings.max_length} of {self.config.ref} "
            "(set preprocessing.truncate = true in its model.toml to cut long texts instead)"
        )


def _padded(shape: tuple[int, ...], rows: list[list[int]], pad: int) -> npt.NDArray[np.int64]:
    # One slice assignment a text: numpy converts each token list in C (no per-token Python loop).
    matrix = np.full(shape, pad, dtype=np.int64)
    for row, tokens in enumerate(rows):
        matrix[row, : len(tokens)] = tokens
    return matrix


def bucket_by_length(
    lengths: Sequence[int] | npt.NDArray[Any], max_batch_size: int, max_tokens: int = 0
) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches of at most ``max_batch_size`` similar lengths.

    Sorting by length before cutting means each batch pads to a length close to
    its own texts'; every index appears exactly once. Token counts are best,
    but character counts are a good enough proxy where tokenizing twice costs.
    With ``max_tokens``, a batch also stops before its rows times its longest
    length would pass it (a text longer than that alone makes a batch).
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
    ordered = np.asarray(lengths)
    order = np.argsort(ordered, kind="stable")
    if max_tokens <= 0:
        return [order[start : start + max_batch_size].tolist() for start in range(0, len(order), max_batch_size)]
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order.tolist():
        # Sorted: the new text is the batch's longest.
        if batch and (len(batch) >= max_batch_size or (len(batch) + 1) * int(ordered[index]) > max_tokens):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


def pool(
    hidden: npt.NDArray[Any],
    attention_mask: npt.NDArray[Any],
    pooling: Pooling,
    normalize: bool,
) -> npt.NDArray[np.float32]:
    """One float32 vector per row: token states mean-pooled over the mask, the first ([CLS]) token, or as is.

    ``hidden`` is ``(batch, sequence, dims)`` for ``mean`` and ``cls``, and
    ``(batch, dims)`` for ``none`` (a graph that pools itself). ``normalize``
    scales every vector to unit L2 length (cosine similarity becomes a dot product).
    """
    states = np.asarray(hidden, dtype=np.float32)
    if pooling == "none":
        if states.ndim != 2:
            raise ModelError(f"pooling 'none' needs a (batch, dims) output, not shape {states.shape}")
        vectors = states
    else:
        if states.ndim != 3:
            raise ModelError(f"pooling {pooling!r} needs a (batch, sequence, dims) output, not shape {states.shape}")
        if pooling == "cls":
            vectors = states[:, 0, :]
        else:
            if attention_mask.shape != states.shape[:2]:
                raise ModelError(
                    f"attention mask of shape {attention_mask.shape} does not fit token states {states.shape}"
                )
            weights = np.asarray(attention_mask, dtype=np.float32)
            # (batch, 1, sequence) @ (batch, sequence, dims): the masked sum as one batched matmul.
            summed = np.matmul(weights[:, None, :], states)[:, 0, :]
            vectors = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)
