"""The `silkie` command. Thin: each subcommand parses its flags and calls one library function.

Heavy libraries (torch, transformers, datasets) are imported inside the commands that use them,
so `--help` and no-op reruns start instantly. Exit codes: 0 done, 2 bad usage or input, 1 failure.
"""

from __future__ import annotations

import argparse
import sys

from silkie import InputError, quiet
from silkie.config import add_flags, from_dict, given_flags


def run_pipeline(args: argparse.Namespace) -> None:
    from silkie.config import parse_set
    from silkie.pipeline import load_pipeline_config, run

    # the named flags are shorthands for config keys; the loader checks every value's range
    overrides = {"dataset.judge_noise": args.judge_noise, "rounds": args.rounds, **parse_set(args.set)}
    cfg = load_pipeline_config(args.preset, args.config, overrides)
    report = run(cfg, args.out or f"runs/{cfg.name}", force=args.force, from_stage=args.from_stage, until=args.until)
    comparison = report.parent / "eval" / "comparison.json"
    if comparison.is_file():  # the headline: base -> Silkie on each benchmark
        import json

        from silkie.eval.compare import summary_lines

        lines = summary_lines(json.loads(comparison.read_text()))
        print("\n".join(["Silkie vs its base:", *(f"  {line}" for line in lines)]))
    if report.is_file():
        print(f"report: {report}")


def world_make(args: argparse.Namespace) -> None:
    from silkie.world.make import write

    if args.n < 1:
        raise InputError("--n must be at least 1")
    path, added = write(args.out, n=args.n, seed=args.seed)
    print(f"{path}: {added} new mini-world instructions, {args.n - added} already there "
          f"(images in {path.parent / 'images'})")


def world_models(args: argparse.Namespace) -> None:
    from silkie.world.make import corpus
    from silkie.world.models import save_tiny_models

    for name, path in save_tiny_models(args.out, corpus(), seed=args.seed).items():
        print(f"wrote untrained {name} to {path}")


def world_train_pool(args: argparse.Namespace) -> None:
    from silkie.chat import WORLD_POOL
    from silkie.world.train_pool import train_pool

    manifest = train_pool(args.out or WORLD_POOL, seed=args.seed)
    print(f"trained the mini pool into {manifest.parent}; measured quality in {manifest}")


def collect_instructions(args: argparse.Namespace) -> None:
    from silkie.sources import CollectConfig, collect

    cfg = from_dict(CollectConfig, given_flags(CollectConfig, args), "silkie collect")
    summary = collect(cfg.sources, args.out, n=cfg.n, seed=args.seed, quotas=dict(cfg.quotas),
                      images_root=cfg.images_root)
    print(summary.table())


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return index, count


def generate(args: argparse.Namespace) -> None:
    from silkie.pool.config import load_pool
    from silkie.pool.generate import GenerateConfig
    from silkie.pool.generate import generate as run

    cfg = from_dict(GenerateConfig, given_flags(GenerateConfig, args), "silkie generate")
    summary = run(load_pool(cfg.pool), args.instructions, args.out, per_instruction=cfg.per_instruction,
                  seed=args.seed, shard=args.shard)
    print(summary.table())
    print(f"completions in {summary.out}")


def train(args: argparse.Namespace) -> None:
    from silkie.train import train_from_args

    train_from_args(args)


def export_model(args: argparse.Namespace) -> None:
    from silkie.train.export import export

    print(f"exported to {export(args.adapter, args.out, merge=args.merge, repo_id=args.repo_id)}")


def annotate(args: argparse.Namespace) -> int:
    from silkie.feedback.annotate import AnnotateConfig
    from silkie.feedback.annotate import annotate as run
    from silkie.feedback.openai_judge import JudgeConfig

    # the judge's own flags are overrides of its preset; the command's judge defaults to openai
    cfg = from_dict(AnnotateConfig, {"judge": "openai", **given_flags(AnnotateConfig, args),
                                     "overrides": given_flags(JudgeConfig, args)}, "silkie annotate")
    summary = run(args.instructions, args.completions, args.out, judge=cfg.judge, config=cfg.config,
                  overrides=cfg.overrides, dry_run=args.dry_run)
    print(summary.table())
    if not args.dry_run:
        print(f"annotations in {summary.out}; judge report in {summary.out.parent / 'judge_report.md'}")
    return 1 if summary.deferred else 0  # unfinished: rerun to judge the deferred items


def eval_mme_score(args: argparse.Namespace) -> None:
    import json

    from silkie.eval import mme_score

    print(json.dumps(mme_score(args.results_dir, out=args.out), indent=2))


def eval_mini(args: argparse.Namespace) -> None:
    import json

    from silkie.eval.mini import run_mini

    summary = run_mini(args.model, args.out, adapter=args.adapter, n=args.n, seed=args.seed, n_mmhal=args.n_mmhal,
                       log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(summary, indent=2))


def eval_benchmark(args: argparse.Namespace) -> None:
    import json

    from silkie.eval import BENCHMARKS
    from silkie.eval.runner import Grader, model_spec

    module = BENCHMARKS[args.eval_command]
    spec = model_spec(args.model, adapter=args.adapter, backend=args.backend, base_url=args.base_url,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens or module.MAX_NEW_TOKENS)
    options = {"log": lambda line: print(line, file=sys.stderr)}
    if args.eval_command != "mme":
        key_env = None if args.judge_api_key_env.lower() == "none" else args.judge_api_key_env
        options["judge"] = Grader.from_file(args.judge_template, module.PLACEHOLDERS, model=args.judge_model,
                                           base_url=args.judge_base_url, api_key_env=key_env)
    if args.eval_command == "mmvet":
        options["runs"] = args.runs
    print(json.dumps(module.run(spec, args.data, args.out, **options), indent=2))


def eval_compare(args: argparse.Namespace) -> None:
    from silkie.eval.compare import compare, markdown

    if args.resamples < 100:
        raise InputError("--resamples must be at least 100")
    print(markdown(compare(args.base, args.trained, out=args.out, resamples=args.resamples, seed=args.seed)), end="")


def space(args: argparse.Namespace) -> None:
    from silkie.space import export, launch, settings

    served = settings(run=args.run, base=args.base, adapter=args.adapter, dataset=args.dataset)
    if args.export:
        print(f"wrote a Space to {export(args.export, args.source, served)}; push it with "
              f"`hf upload ORG/NAME {args.export} --repo-type space`")
    else:
        launch(served, host=args.host, port=args.port, share=args.share)


def push(args: argparse.Namespace) -> None:
    if args.model:
        from silkie.train.export import push_model

        print(push_model(args.model, args.repo_id, private=args.private))
        return
    from silkie.hub import push_folder

    print(push_folder(args.dataset, args.repo_id, repo_type="dataset", private=args.private))


def dataset_stats(args: argparse.Namespace) -> None:
    from silkie.stats import stats

    summary = stats(args.dataset, args.out)["summary"]
    print(f"{args.dataset}: {summary['rows']} rows, {summary['responses']} responses, {summary['pairs']} pairs "
          f"({summary['pairs_from']}); wrote {', '.join(summary['files'])} to {args.out}")


def validate(args: argparse.Namespace) -> int:
    from silkie.io import read_checked, record_kind

    kind = record_kind(args.path, args.kind)
    counts = {"ok": 0, "bad": 0}
    for _, record in read_checked(args.path, kind):
        if isinstance(record, Exception):
            counts["bad"] += 1
            print(f"error: {record}", file=sys.stderr)
        else:
            counts["ok"] += 1
    print(f"{args.path}: {counts['ok']} valid {kind} records, {counts['bad']} with errors")
    return 2 if counts["bad"] else 0


def build_parser() -> argparse.ArgumentParser:
    # the stage commands' flags come from their config dataclasses (silkie.config.add_flags)
    from silkie.feedback.annotate import AnnotateConfig
    from silkie.feedback.openai_judge import JudgeConfig
    from silkie.pool.generate import GenerateConfig
    from silkie.sources import CollectConfig

    parser = argparse.ArgumentParser(prog="silkie", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="library warnings, progress bars and the Trainer's raw metric dicts (or SILKIE_VERBOSE=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    loop = commands.add_parser("run", help="the whole loop: collect, generate, annotate, dataset, train, eval, "
                                           "stats, report (default: the mini world, minutes on a CPU)")
    preset = loop.add_mutually_exclusive_group()
    preset.add_argument("--preset", default=None, help="configs/pipeline/NAME.yaml (default: mini)")
    preset.add_argument("--config", help="a pipeline YAML file")
    loop.add_argument("--out", help="run folder (default: runs/<config name>)")
    loop.add_argument("--force", action="store_true", help="redo the stages whose inputs changed, and those after")
    loop.add_argument("--from-stage", metavar="STAGE",
                      help="redo STAGE and every stage after it (collect, generate, annotate, dataset, train, "
                           "eval, stats, report)")
    loop.add_argument("--until", metavar="STAGE", help="stop after STAGE (e.g. dataset, to train with "
                                                        "`accelerate launch` on several GPUs, then rerun)")
    loop.add_argument("--rounds", type=int, metavar="K",
                      help="K rounds: each further round samples fresh answers from the last round's model, "
                           "judges, pairs and trains again (on-policy; default: the config's, 1)")
    loop.add_argument("--judge-noise", type=float, metavar="P",
                      help="swap a share P of the preference pairs (how much judge error the recipe tolerates)")
    loop.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                      help="override any config key, dotted for sections, value in YAML "
                           "(e.g. --set collect.n=200 --set train.set.num_train_epochs=2)")
    loop.set_defaults(func=run_pipeline)

    world = commands.add_parser("world", help="the mini world: scenes, tasks and tiny models")
    world_commands = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")
    make = world_commands.add_parser("make", help="draw scenes and write instructions about them")
    make.add_argument("--n", type=int, default=200, help="number of instructions (default 200)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", required=True, help="run folder: writes instructions.jsonl and images/")
    make.set_defaults(func=world_make)
    models = world_commands.add_parser("models", help="write the untrained tiny Qwen2-VL and LLaVA")
    models.add_argument("--out", required=True, help="folder for tiny-qwen2-vl/ and tiny-llava/")
    models.add_argument("--seed", type=int, default=0)
    models.set_defaults(func=world_models)
    pool = world_commands.add_parser("train-pool", help="train the mini pool of tiny models of graded quality")
    pool.add_argument("--out", default=None, help="output folder (default: the shipped pool, silkie/world/trained)")
    pool.add_argument("--seed", type=int, default=0)
    pool.set_defaults(func=world_train_pool)

    gather = commands.add_parser("collect", help="sample instructions from dataset releases and the mini world")
    add_flags(gather, CollectConfig)
    gather.add_argument("--seed", type=int, default=0)
    gather.add_argument("--out", required=True,
                        help="the instructions file, e.g. runs/x/instructions.jsonl; images/ go beside it")
    gather.set_defaults(func=collect_instructions)

    gen = commands.add_parser("generate", help="answer each instruction with K models of a pool")
    add_flags(gen, GenerateConfig)
    gen.add_argument("--instructions", required=True, help="RUN/instructions.jsonl")
    gen.add_argument("--out", required=True, help="RUN/completions.jsonl (shards add .shard-I-of-N)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the model assignment")
    gen.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                     help="do shard I of N (split by instruction id), so N machines share the work")
    gen.set_defaults(func=generate)

    judge = commands.add_parser("annotate", help="rate every response on the three aspects with an AI judge")
    judge.add_argument("--instructions", required=True, help="RUN/instructions.jsonl (image paths are relative to it)")
    judge.add_argument("--completions", required=True, help="RUN/completions.jsonl (shards are read with it)")
    judge.add_argument("--out", required=True,
                       help="RUN/annotations.jsonl; judge_report.md and judge_config.yaml are written beside it")
    add_flags(judge, AnnotateConfig)
    add_flags(judge, JudgeConfig)
    judge.add_argument("--dry-run", action="store_true", help="estimate requests, tokens and cost; send nothing")
    judge.set_defaults(func=annotate)

    from silkie.train import add_arguments as add_train_arguments  # no torch: flags only

    fit = commands.add_parser("train", help="DPO (or SFT) + LoRA on a VLFeedback pairs dataset, with TRL")
    add_train_arguments(fit)
    fit.set_defaults(func=train)
    export = commands.add_parser("export", help="an adapter (+ merged model) and model card, ready for the Hub")
    export.add_argument("--adapter", required=True, help="RUN/train/adapter")
    export.add_argument("--out", required=True)
    export.add_argument("--merge", action="store_true", help="also write the merged full model")
    export.add_argument("--repo-id", help="the Hub id the card names")
    export.set_defaults(func=export_model)

    evaluate = commands.add_parser("eval", help="score benchmarks and compare base vs trained")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")
    score = eval_commands.add_parser("mme-score", help="score MME result files by the official rules (JSON)")
    score.add_argument("--results-dir", required=True,
                       help="folder of <subtask>.txt: image<TAB>question<TAB>gt<TAB>response")
    score.add_argument("--out", help="also save the scored items as OUT/mme/ for `silkie eval compare`")
    score.set_defaults(func=eval_mme_score)
    mini = eval_commands.add_parser("mini", help="mini-MME and mini-MMHal on held-out world items (for `eval compare`)")
    mini.add_argument("--model", required=True, help="ID|PATH|world:NAME")
    mini.add_argument("--adapter", help="a LoRA adapter applied on top without merging")
    mini.add_argument("--out", required=True, help="DIR: writes DIR/mme/, DIR/mmhal/ and DIR/mini.json; resumes")
    mini.add_argument("--n", type=int, default=400, help="mini-MME questions, two per image (default 400)")
    mini.add_argument("--n-mmhal", type=int, default=96, help="mini-MMHal questions (default 96)")
    mini.add_argument("--seed", type=int, default=3000, help="world seed of the items (default 3000)")
    mini.set_defaults(func=eval_mini)
    for name, help_text, data_help in (
            ("mme", "answer and score MME by the official rules", "the release folder (<subtask>/ with images "
             "and question files) or a Hub dataset id holding it"),
            ("mmhal", "answer MMHal-Bench; a text-only judge rates 0-6", "response_template.json (or its folder, "
             "with the images) or a Hub dataset id"),
            ("mmvet", "answer MM-Vet; a few-shot grader scores 0-1, several runs", "mm-vet.json (or its folder, "
             "with images/) or a Hub dataset id"),
            ("redteam", "answer RTVLM red-teaming prompts; a judge rates 1-10 on our own rubric",
             "a folder of <config>/*.jsonl|*.parquet (see silkie/eval/redteam.py) or a Hub dataset id")):
        bench = eval_commands.add_parser(name, help=f"{help_text} (for `eval compare`)")
        bench.add_argument("--model", required=True, help="ID|PATH|world:NAME, or the API's model name")
        bench.add_argument("--adapter", help="a LoRA adapter applied on top without merging")
        bench.add_argument("--backend", choices=("transformers", "openai", "vllm"), default="transformers")
        bench.add_argument("--base-url", help="the OpenAI-compatible server of --backend openai")
        bench.add_argument("--batch-size", type=int, default=16)
        bench.add_argument("--max-new-tokens", type=int, help="default 32 for mme, 512 otherwise (greedy)")
        bench.add_argument("--data", required=True, help=data_help)
        bench.add_argument("--out", required=True, help=f"DIR: writes DIR/{name}/; resumes")
        if name != "mme":
            bench.add_argument("--judge-model", default="gpt-4o")
            bench.add_argument("--judge-base-url", help="any OpenAI-compatible server (default: the OpenAI API)")
            bench.add_argument("--judge-template", metavar="FILE",
                               help="replace our judge wording: a file with our named placeholders, or (mmhal) "
                                    "your copy of the official template, as a text file with positional {} "
                                    "fields or the official evaluation script itself (read, never run)")
            bench.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                               help="the variable holding the judge's key ('none' for a server without keys)")
        if name == "mmvet":
            bench.add_argument("--runs", type=int, default=5, help="grading runs averaged (default 5)")
        bench.set_defaults(func=eval_benchmark)
    pair = eval_commands.add_parser("compare", help="paired base-vs-trained table with bootstrap CIs and McNemar")
    pair.add_argument("base", metavar="BASE_DIR")
    pair.add_argument("trained", metavar="TRAINED_DIR")
    pair.add_argument("--out", help="where comparison.{json,md} and results.json go (default: TRAINED_DIR/..)")
    pair.add_argument("--resamples", type=int, default=2000)
    pair.add_argument("--seed", type=int, default=0)
    pair.set_defaults(func=eval_compare)

    demo = commands.add_parser("space", help="the Gradio demo: Silkie next to its base model (or --export a Space)")
    demo.add_argument("--run", metavar="DIR", help="serve DIR/train/adapter and browse DIR/vlfeedback "
                                                   "(default: runs/mini, or SILKIE_ADAPTER / SILKIE_DATASET)")
    demo.add_argument("--base", help="base model: path, Hub id or world:NAME (default: the adapter's base)")
    demo.add_argument("--adapter", help="Silkie: its LoRA adapter, or a merged model (a second copy of the "
                                        "weights): path or Hub id ('' for none)")
    demo.add_argument("--dataset", help="the VLFeedback dataset to browse: path or Hub id ('' for none)")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    demo.add_argument("--port", type=int, help="default: the first free port from 7860")
    demo.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    demo.add_argument("--export", metavar="DIR", help="write a ready-to-push Space folder instead of serving")
    demo.add_argument("--source", metavar="SPEC", help="with --export: where the Space installs the toolkit "
                                                        "from, a git URL (git+https://…/silkie.git@TAG) or a wheel URL")
    demo.set_defaults(func=space)

    upload = commands.add_parser("push", help="upload a built dataset or an exported model to the Hub (HF_TOKEN)")
    what = upload.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="a folder written by `vlfeedback_dataset.py build`")
    what.add_argument("--model", help="a folder written by `silkie export`")
    upload.add_argument("--repo-id", required=True, help="ORG/NAME")
    upload.add_argument("--private", action="store_true")
    upload.set_defaults(func=push)

    describe = commands.add_parser("stats", help="figures and tables of a VLFeedback-format dataset: ratings, "
                                                 "models, pairs")
    describe.add_argument("--dataset", required=True, metavar="DIR|HUB_ID",
                          help="a built dataset folder or a Hub dataset id (ID@REVISION for a branch or PR)")
    describe.add_argument("--out", required=True, help="folder for stats.md, stats.json and the PNG figures")
    describe.set_defaults(func=dataset_stats)

    check = commands.add_parser("validate", help="check a stage's JSONL file record by record")
    check.add_argument("path", help="instructions.jsonl, completions.jsonl or annotations.jsonl")
    check.add_argument("--kind", choices=("instruction", "completion", "annotation"),
                       help="record type (default: from the file name)")
    check.set_defaults(func=validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "train" in argv[:2] and argv[:argv.index("train")] in ([], ["-v"], ["--verbose"]):
        # its flags are generated from TRL's DPOConfig, so silkie.train parses them (importing trl); the
        # train subparser below only lists the command for `silkie --help`
        from silkie.train import main as train_main

        at = argv.index("train")
        return train_main(argv[:at] + argv[at + 1:], prog="silkie train")
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet(args.verbose)
    try:
        return args.func(args) or 0
    except (InputError, FileNotFoundError) as error:
        print(f"silkie: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("silkie: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
