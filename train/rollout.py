"""GRPO rollouts sampled by a vLLM server through the serving loop (``generation = "server"``).

TRL's own CPU generation (transformers ``generate``, one turn at a time, padded batches) spent most
of a GRPO step decoding (bench/results/grpo_profile.md). Here a vLLM server started for the run
samples every rollout instead, through ``env.agent`` (the loop ``inboxrl ask`` and ``eval`` run, with
the same prompt, tools, parser and text fallback), and TRL only trains on the tokens:

1. Before the first rollout of each optimizer step, the policy's LoRA is merged into the base weights
   in memory and written to ``<run>/generation/weights/model.safetensors``; the server reloads them in
   place (vLLM's ``reload_weights`` through ``/collective_rpc``) and drops its prefix cache. (Serving
   the LoRA itself was ~35x slower with vLLM's stock CPU LoRA ops, and a reload takes under a second
   for 135M.)
2. The rollouts run at ``settings.concurrency`` = the whole generation batch, asking the server for
   each turn's prompt and sampled token ids and log-probs (``arun_agent(record_tokens=True)``).
3. :func:`rollout_tokens` turns a trajectory into TRL's ``prompt_ids``, ``completion_ids``,
   ``logprobs`` and ``env_mask``: the first turn's prompt, then every sampled token (mask 1) and the
   tokens the server added between turns (tool results, turn headers; mask 0).

The server re-renders earlier replies from their parsed tool calls; when that rendering differs from
the sampled tokens (e.g. the loop dropped an argument the tool does not take), the sampled tokens stay
in the training sequence and the re-rendered reply is skipped (``drift`` counts such turns). A rollout
that failed for infrastructure reasons (timeouts, a restarting server) has no loss tokens and no
reward (TRL leaves it out), and is counted in ``inbox/infra_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from env.config import Settings
from env.trajectory import Trajectory
from synth_data.questions import Question

GENERATION_DIR = "generation"
WEIGHTS_FILE = "model.safetensors"
SERVED_NAME = "policy"


class RolloutError(RuntimeError):
    """The generation server returned tokens that cannot be laid out as one training sequence."""


def rollout_tokens(
    traj: Trajectory, end_token_id: int, max_completion_length: int
) -> tuple[list[int], list[int], list[float], list[int], int]:
    """One trajectory as ``(prompt_ids, completion_ids, logprobs, env_mask, drift)`` for TRL.

    ``completion_ids`` is every turn's sampled tokens (``env_mask`` 1, their sampling log-probs)
    with the tokens the server put between turns (``env_mask`` 0, log-prob 0). ``end_token_id`` ends
    an assistant message in the chat template (ChatML's ``<|im_end|>``): where the server re-rendered
    a reply differently from what was sampled, the next turn's prompt is taken from just after the end
    of that re-rendered reply, and ``drift`` counts such turns. The completion is cut at
    ``max_completion_length`` tokens. A trajectory without token ids (a failed first call) gives a
    one-token prompt and completion (``end_token_id``) with mask 0: nothing to learn from.

    >>> from env.trajectory import Turn
    >>> t = Trajectory("q", "i", "2001-01-01", "m", turns=[
    ...     Turn(0, 0.0, prompt_token_ids=[1, 2], token_ids=[5, 9], logprobs=[-0.1, -0.2]),
    ...     Turn(1, 0.0, prompt_token_ids=[1, 2, 5, 9, 7, 3], token_ids=[6, 9], logprobs=[-0.3, -0.4])])
    >>> rollout_tokens(t, 9, 100)
    ([1, 2], [5, 9, 7, 3, 6, 9], [-0.1, -0.2, 0.0, 0.0, -0.3, -0.4], [1, 1, 0, 0, 1, 1], 0)

    The server re-rendered the first reply ``5 9`` as ``4 9``: the sampled tokens are kept.

    >>> t.turns[1].prompt_token_ids = [1, 2, 4, 9, 7, 3]
    >>> rollout_tokens(t, 9, 4)
    ([1, 2], [5, 9, 7, 3], [-0.1, -0.2, 0.0, 0.0], [1, 1, 0, 0], 1)
    """
    turns = [t for t in traj.turns if t.prompt_token_ids is not None and t.token_ids is not None]
    if not turns:
        return [end_token_id], [end_token_id], [0.0], [0], 0
    prompt = list(turns[0].prompt_token_ids or [])
    completion: list[int] = []
    logprobs: list[float] = []
    mask: list[int] = []
    drift = 0
    for index, turn in enumerate(turns):
        if index:
            shown = list(turn.prompt_token_ids or [])
            previous = list(turns[index - 1].prompt_token_ids or [])
            rendered = previous + list(turns[index - 1].token_ids or [])
            common = _common_prefix(shown, rendered)
            start = common
            if common < len(rendered):
                if common < len(previous):
                    raise RolloutError(
                        f"turn {index}'s prompt differs from turn {index - 1}'s at token {common}, before "
                        "its reply: the server changed the conversation's earlier text"
                    )
                try:
                    start = shown.index(end_token_id, common) + 1
                except ValueError as e:
                    raise RolloutError(
                        f"turn {index}'s prompt has no end-of-message token {end_token_id} after the "
                        "re-rendered reply"
                    ) from e
                drift += 1
            between = shown[start:]
            completion += between
            logprobs += [0.0] * len(between)
            mask += [0] * len(between)
        sampled = list(turn.token_ids or [])
        lps = list(turn.logprobs or [])
        if len(lps) != len(sampled):
            raise RolloutError(f"turn {index}: {len(sampled)} tokens but {len(lps)} log-probs")
        completion += sampled
        logprobs += lps
        mask += [1] * len(sampled)
    cut = max_completion_length
    return prompt, completion[:cut], logprobs[:cut], mask[:cut], drift


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def merged_state_dict(model: Any, dtype: Any) -> dict[str, Any]:
    """The base model's weights with every LoRA delta added, named as in the base checkpoint.

    ``model`` is a PEFT ``PeftModel`` (LoRA). Works in memory, without ``merge_and_unload``, so
    training goes on with the adapter as it is.
    """
    import torch

    merged: dict[str, Any] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                active = module.active_adapters
                weight = module.base_layer.weight.detach().clone()
                for adapter in active:
                    weight += module.get_delta_weight(adapter)
                merged[_base_name(name) + ".weight"] = weight.to(dtype).contiguous()
        for name, param in model.named_parameters():
            if "lora_" in name:
                continue
            merged.setdefault(_base_name(name), param.detach().to(dtype).contiguous())
    return merged


def _base_name(name: str) -> str:
    """``base_model.model.model.layers.0.q_proj.base_layer.weight`` -> ``model.layers.0.q_proj.weight``."""
    return name.removeprefix("base_model.model.").replace(".base_layer", "")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def generation_server(settings: Settings, base_model: str | Path, folder: Path) -> Iterator[Settings]:
    """Start a vLLM server on ``base_model`` for a training run; yields the settings that reach it.

    The server belongs to the run (``<folder>/generation``: its log and key), binds to a free local
    port, serves the model as ``policy`` and allows weight reloads (vLLM's development routes, behind
    its random API key like every route). It is stopped when the block ends, however it ends.
    """
    from env.model import ServerStartError, serve, stop

    home = folder / GENERATION_DIR
    home.mkdir(parents=True, exist_ok=True)
    server = settings.model_copy(
        update={
            "home": home,
            "db": settings.db_path,
            "model": SERVED_NAME,
            "serve_port": free_port(settings.serve_host),
            "api_key": "EMPTY",
        }
    )
    server.base_url = f"http://{server.serve_host}:{server.serve_port}/v1"
    try:
        serve(server, Path(base_model), progress=False, dev_routes=True)
    except ServerStartError as e:
        raise ServerStartError(
            f"The run's generation server did not start ({e}). Train with TRL's own generation "
            "instead: --set generation=trainer"
        ) from e
    try:
        yield server
    finally:
        stop(server)


def write_weights(server: Settings, state_dict: dict[str, Any], weights_dir: Path) -> None:
    """Save ``state_dict`` to ``weights_dir`` and have the generation server reload it in place
    (then drop its prefix cache: cached prompts were computed by the old weights)."""
    from safetensors.torch import save_file

    from env.model import post_to_server

    weights_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights_dir / (WEIGHTS_FILE + ".tmp")
    save_file(state_dict, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights_dir / WEIGHTS_FILE)
    reload = {"method": "reload_weights", "kwargs": {"weights_path": str(weights_dir)}}
    post_to_server(server, "collective_rpc", reload, root=True)
    post_to_server(server, "reset_prefix_cache", None, root=True)


class ServerRollouts:
    """TRL's ``rollout_func``: sample a generation batch on the run's vLLM server (see the module doc).

    :param server: settings reaching the generation server (:func:`generation_server`).
    :param questions: the training questions; a prompt is matched to its question by its messages.
    :param rows: the dataset's rows (``train.env.question_row``), as TRL reads them back.
    :param config: the GRPO settings (temperature, turns, per-turn and per-rollout token caps, prompt).
    :param weights_dir: where the merged weights are written for the server to reload.
    :param end_token_id: the chat template's end-of-message token.
    :param dtype: the dtype the weights are written in (the server's).
    """

    def __init__(
        self,
        server: Settings,
        questions: list[Question],
        rows: Any,
        config: Any,
        weights_dir: Path,
        end_token_id: int,
        dtype: Any,
    ) -> None:
        by_id = {q.id: q for q in questions}
        self.questions = {prompt_key(row["prompt"]): by_id[row["question_id"]] for row in rows}
        self.server = server
        self.config = config
        self.weights_dir = weights_dir
        self.end_token_id = end_token_id
        self.dtype = dtype
        self.synced_step: int | None = None
        self.drift = 0

    def sync(self, model: Any) -> None:
        """Write the policy's merged weights and have the server reload them in place."""
        write_weights(self.server, merged_state_dict(model, self.dtype), self.weights_dir)

    def __call__(self, prompts: list[list[dict]], trainer: Any) -> dict[str, list]:
        """Sample one rollout per prompt (TRL already repeats each prompt ``num_generations`` times)."""
        from env.agent import arun_batch

        step = trainer.state.global_step
        if step != self.synced_step:
            self.sync(trainer.accelerator.unwrap_model(trainer.model))
            self.synced_step = step
        try:
            items = [self.questions[prompt_key(p)] for p in prompts]
        except KeyError as e:
            raise RolloutError("a prompt of the batch matches no training question") from e
        policy = self.server.model_copy(
            update={
                "temperature": self.config.temperature,
                "max_turns": self.config.max_turns,
                "few_shot": self.config.few_shot,
                "max_body_chars": self.config.max_body_chars,
                "concurrency": len(items),
            }
        )
        trajectories = asyncio.run(
            arun_batch(
                items,
                db=policy.db_path,
                settings=policy,
                tracer=False,
                progress=False,
                record_tokens=True,
                max_tokens=self.config.max_turn_tokens,
            )
        )
        out: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask")}
        for traj in trajectories:
            prompt, completion, logprobs, mask, drift = rollout_tokens(
                traj, self.end_token_id, self.config.max_completion_length
            )
            self.drift += drift
            for key, value in zip(out, (prompt, completion, logprobs, mask), strict=True):
                out[key].append(value)
        out["trajectory"] = [traj.to_dict() for traj in trajectories]
        return out


def prompt_key(messages: list[dict]) -> str:
    """A prompt's identity: its messages as canonical JSON."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)
