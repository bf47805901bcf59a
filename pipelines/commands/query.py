"""``llmops query``: send a prompt to the local OpenAI-compatible endpoint with the openai client."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="send a prompt to the served model",
        description=(
            "Send a prompt to the model served by `llmops run` (or any OpenAI-compatible "
            "base URL) and print only the answer (--json: the whole response; --stream: the answer as "
            "it is generated). Completions wrap the question as 'Q: ...\\nA:', the format the model was "
            "trained on; chat requests get the same prompt from the model's chat template. The "
            "bootstrap model answers task prompts such as 'convert 7 l to ml' or 'uppercase hello'."
        ),
    )
    p.add_argument("prompt", help="the question; wrapped as 'Q: ...\\nA:' unless --raw")
    p.add_argument("--name", default="llm", help="InferenceService / model name (default llm)")
    p.add_argument("--url", default=None, help="OpenAI base URL (default: the local service's router)")
    p.add_argument("--state-dir", type=Path, default=Path(".llmops"), help="llmops state folder (default ./.llmops)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens to generate (default 16)")
    p.add_argument("--chat", action="store_true", help="use /chat/completions instead of /completions")
    p.add_argument("--raw", action="store_true", help="send the prompt as is")
    p.add_argument("--json", action="store_true", help="print the full response as JSON")
    p.add_argument("--stream", action="store_true", help="stream the answer as it is generated")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import openai

    from components.bootstrap.dataset import prompt_template
    from pipelines.cli import CliError

    url = args.url
    if url is None:
        from serving.backends.base import BackendError
        from serving.backends.local import LocalBackend

        try:
            url = LocalBackend(args.state_dir.resolve() / "serving").endpoints(args.name, "default").url + "/openai/v1"
        except BackendError as exc:
            raise CliError(f"no local service {args.name!r}: {exc}. Run `llmops run` first, or pass --url") from exc
    if args.json and args.stream:
        raise CliError("--json and --stream do not go together: pick one")
    if not getattr(args, "verbose", False):
        for name in ("httpx", "httpx2", "openai", "httpcore"):  # one INFO line per request otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=1, timeout=60)
    common = {"model": args.name, "max_tokens": args.max_tokens, "temperature": 0}
    try:
        if args.chat:
            request = dict(common, messages=[{"role": "user", "content": args.prompt}])
            if args.stream:
                _print_stream(chunk.choices[0].delta.content or "" for chunk in
                              client.chat.completions.create(**request, stream=True) if chunk.choices)
            else:
                resp = client.chat.completions.create(**request)
                print(resp.model_dump_json(indent=2) if args.json else (resp.choices[0].message.content or "").strip())
        else:
            prompt = args.prompt if args.raw else prompt_template(args.prompt)
            request = dict(common, prompt=prompt, stop=["\n"])
            if args.stream:
                _print_stream(chunk.choices[0].text for chunk in client.completions.create(**request, stream=True)
                              if chunk.choices)
            else:
                resp = client.completions.create(**request)
                print(resp.model_dump_json(indent=2) if args.json else resp.choices[0].text.strip())
    except openai.APIConnectionError as exc:
        raise CliError(f"cannot reach {url}: {exc}. Is it running? (`llmops status`)") from exc
    except openai.APIStatusError as exc:
        raise CliError(f"{url} answered {exc.status_code}: {exc.message}") from exc
    return 0


def _print_stream(pieces: Iterable[str]) -> None:
    """Write the answer as it arrives (leading whitespace of the answer dropped), then a newline."""
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
