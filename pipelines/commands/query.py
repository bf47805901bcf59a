"""``llmops query``: send a prompt to the local OpenAI-compatible endpoint with the openai client."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="send a prompt to the served model",
        description=(
            "Send a prompt to the model served by `llmops run` (or any OpenAI-compatible "
            "base URL) and print the answer. The bootstrap model answers task prompts such as "
            "'convert 12 km to m'."
        ),
    )
    p.add_argument("prompt", help="the question; wrapped as 'Q: ...\\nA:' unless --raw")
    p.add_argument("--name", default="llm", help="InferenceService / model name (default llm)")
    p.add_argument("--url", default=None, help="OpenAI base URL (default: the local service's router)")
    p.add_argument("--state-dir", type=Path, default=Path(".llmops"), help="llmops state folder (default ./.llmops)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens to generate (default 16)")
    p.add_argument("--chat", action="store_true", help="use /chat/completions instead of /completions")
    p.add_argument("--raw", action="store_true", help="send the prompt as is")
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
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=1, timeout=60)
    try:
        if args.chat:
            resp = client.chat.completions.create(
                model=args.name, messages=[{"role": "user", "content": args.prompt}], max_tokens=args.max_tokens,
                temperature=0,
            )
            print(resp.choices[0].message.content.strip())
        else:
            prompt = args.prompt if args.raw else prompt_template(args.prompt)
            resp = client.completions.create(
                model=args.name, prompt=prompt, max_tokens=args.max_tokens, temperature=0, stop=["\n"]
            )
            print(resp.choices[0].text.strip())
    except openai.APIConnectionError as exc:
        raise CliError(f"cannot reach {url}: {exc}. Is it running? (`llmops status`)") from exc
    except openai.APIStatusError as exc:
        raise CliError(f"{url} answered {exc.status_code}: {exc.message}") from exc
    return 0
