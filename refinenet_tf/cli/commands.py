"""The ``refinenet-tf`` command line: one entry point with subcommands.

Every subcommand is a function of parsed arguments and has its own parser function (``_add_<name>_parser``);
:func:`main` takes ``argv`` so tests call it directly. Bad input ends with one error line naming the flag or
file and the fix, and exit status 2 (argparse prints its usage line before errors in the arguments themselves):
the library's errors name its Python arguments (``num_classes=``), which :func:`main` turns into the flags
(``--num-classes``). Building the parser imports no TensorFlow: ``refinenet-tf --help`` answers at once.
"""

import argparse
import os
import re
import sys

from refinenet_tf import options
from refinenet_tf._version import __version__
from refinenet_tf.cli import benchmark as benchmarks
from refinenet_tf.training import recipes

__all__ = ["build_parser", "main"]


def _demo(args):
    from refinenet_tf.cli import demo

    demo.run_demo(args.output, task=args.task, epochs=args.epochs, num_train=args.num_train, num_val=args.num_val,
                  seed=args.seed, steps_per_epoch=args.steps_per_epoch)
    return 0


def _train(args):
    from refinenet_tf import training

    weights = None if args.backbone_weights in ("none", "None") else args.backbone_weights
    config = training.TrainConfig(
        recipe=args.recipe, data=args.data, val_data=args.val_data, train_split=args.train_split,
        val_split=args.val_split, num_classes=args.num_classes, run_dir=args.run_dir, epochs=args.epochs,
        batch_size=args.batch_size, crop_size=args.crop_size, learning_rate=args.lr,
        steps_per_epoch=args.steps_per_epoch, backbone_weights=weights, strategy=args.strategy,
        jit_compile="auto" if args.jit is None else args.jit, mixed_precision=args.mixed_precision,
        image_every=args.image_every, init_from=args.init_from, teacher=args.teacher,
        loss_weights=dict(zip(("segmentation", "depth"), args.loss_weights)) if args.loss_weights else None,
        depth_loss=args.depth_loss, resume=args.resume, overwrite=args.overwrite, seed=args.seed)
    _, history = training.train(config)
    final = {key: round(values[-1], 4) for key, values in history.history.items()}
    print(f"trained {len(history.epoch)} epoch(s) into {config.run_dir}: {final}")
    return 0


def _size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 512x512") from None
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be >= 32")
    return height, width


def _check_data(args):
    from refinenet_tf import data

    report = data.check_dataset(args.spec, args.split, num_classes=args.num_classes, ignore_value=args.ignore_value)
    for problem in report.problems:
        print(problem)
    pixels = ", ".join(f"{value}: {count:,}" for value, count in report.class_pixels.items())
    print(f"{report.source}: {report.examples} examples, {len(report.problems)} problem(s); pixels per mask "
          f"value: {pixels or '-'}")
    return 0 if report.ok else 1


def _doctor(args):
    from refinenet_tf.training import doctor

    mixed = {"off": False, "on": True}.get(args.mixed_precision, args.mixed_precision)
    doctor.run_doctor(args.model, size=args.size, batch_size=args.batch_size, steps=args.steps,
                      jit_compile="auto" if args.jit is None else args.jit, mixed_precision=mixed,
                      strategy=args.strategy, log=lambda line: print(line, flush=True))
    return 0


def _benchmark(args):
    from refinenet_tf import _files, models

    names = models.list_models() if args.models == ["all"] else args.models
    unknown = [name for name in names if name not in models.PRESETS and not os.path.exists(name)]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; use names from {models.list_models()}, 'all', or trained "
                         "models (run folders, .keras files)")
    if args.json:
        _files.writable_folder(os.path.dirname(os.path.abspath(args.json)), "the folder of --json")
    for image in args.agreement_images or ():
        if not os.path.isfile(image):
            raise FileNotFoundError(f"--agreement-images: {image!r} is not a file.")
    if args.agreement_model and not os.path.exists(args.agreement_model):
        raise FileNotFoundError(f"--agreement-model: {args.agreement_model!r} does not exist; train one first "
                                "(refinenet-tf demo writes checkpoints/demo/run).")
    results = benchmarks.run_benchmark(names, args.size, runs=args.runs, engine_names=args.engines,
                                       precisions=args.precision, matmul_size=args.matmul_size,
                                       multitask_size=args.multitask_size if args.multitask else None,
                                       agreement_model=args.agreement_model,
                                       agreement_images=args.agreement_images or (),
                                       log=lambda line: print(line, flush=True))
    if args.json:
        import json

        with _files.atomic_path(args.json, suffix=".json") as temporary, open(temporary, "w") as stream:
            json.dump(results, stream, indent=2, default=str)
    return 0


def _model_from_args(args):
    """The keras model of ``--model`` (:meth:`refinenet_tf.Segmenter.from_preset`); a preset name without
    ``--weights`` is refused before anything is built or downloaded, unless ``--allow-untrained``."""
    from refinenet_tf import models
    from refinenet_tf.training import runs
    from refinenet_tf.tasks import Segmenter

    if args.model in models.PRESETS and not args.weights and not os.path.exists(args.model) \
            and not args.allow_untrained:
        raise runs.UntrainedModelError(runs.untrained_preset_message(args.model, "model"))
    weights = None if args.backbone_weights in ("none", "None") else args.backbone_weights
    return Segmenter.from_preset(args.model, num_classes=args.num_classes, weights=args.weights,
                                 backbone_weights=weights, allow_untrained=args.allow_untrained).model


def _engine_from_args(args, scales=(1.0,), flip=False, max_side=None):
    """The engine ``--engine`` / ``--precision`` name for ``--model``: an exported file (SavedModel folder written
    by ``export``, ``.tflite``, ``.onnx``, OpenVINO ``.xml``) runs on the engine that reads it
    (:func:`refinenet_tf.inference.engines.engine_for_path`), anything else is loaded as a Keras model. A
    multi-task model is run at scale 1 (with ``--flip`` if asked)."""
    from refinenet_tf import inference
    from refinenet_tf.inference import engines
    from refinenet_tf.models import outputs as model_outputs

    source = args.model
    try:
        engines.engine_for_path(source)
    except ValueError:
        source = _model_from_args(args)
        if model_outputs.is_multitask(source) and (tuple(scales) != (1.0,) or max_side):
            raise ValueError("--scales and --max-side apply to segmentation models; a multi-task model runs at "
                             "scale 1 (with --flip if asked).")
    return inference.engine_for(source, args.engine, scales=scales, flip=flip, max_side=max_side,
                                precision=args.precision)


def _evaluate(args):
    from refinenet_tf import _files
    from refinenet_tf.inference import evaluation
    from refinenet_tf.training import runs

    if args.output:  # before any work, not after a long evaluation
        _files.writable_folder(args.output, "--output")
    engine = _engine_from_args(args, args.scales, args.flip, args.max_side)
    name = engine.metadata.get("model", args.model)
    result = evaluation.evaluate(engine, args.data, args.split, num_classes=args.num_classes,
                                 class_names=runs.saved_class_names(args.model), limit=args.limit,
                                 progress=args.progress)
    depth = f" and {result.depth_pixels:,} valid depth pixels" if result.depth is not None else ""
    print(f"{result.source}: {name} on {result.pixels:,} labelled pixels{depth} ({engine.name} engine, "
          f"{engine.precision})")
    print(result.table())
    if args.output:
        print("wrote " + ", ".join(result.save(args.output)))
    return 0


def _predict(args):
    from refinenet_tf import inference
    from refinenet_tf.training import runs
    from refinenet_tf.data import visualization

    palette = visualization.read_palette(args.palette) if args.palette else None
    engine = _engine_from_args(args, args.scales, args.flip, args.max_side)
    depth = "depth" in engine.outputs
    if depth and args.probabilities:
        raise ValueError("--probabilities applies to segmentation models; a multi-task model writes its labels "
                         "and depth.")
    if not depth and args.max_depth is not None:
        raise ValueError(f"--max-depth applies to multi-task models; {args.model} predicts segmentation only.")
    result = inference.predict_files(engine, args.inputs, args.output, palette=palette,
                                     probabilities=args.probabilities, class_names=runs.saved_class_names(args.model),
                                     overlay_alpha=args.alpha, skip_errors=args.skip_errors, progress=args.progress,
                                     max_pixels=args.max_pixels or None, max_depth=args.max_depth)
    for path, message in result["failed"].items():
        print(f"skipped {path}: {message}", file=sys.stderr)
    written = ("label PNGs, overlays and depth PNGs (colour and 16-bit millimetres)" if depth
               else "label PNGs and overlays")
    print(f"wrote {written} of {len(result['written'])} image(s) to {args.output}"
          + (f"; {len(result['failed'])} could not be read" if result["failed"] else ""))
    return 1 if result["failed"] else 0


def _export(args):
    from refinenet_tf import export
    from refinenet_tf.training import runs

    output = args.output
    if args.format != "saved_model":
        extension = {"openvino": ".xml"}.get(args.format, "." + args.format)
        if not output.endswith(extension):
            raise ValueError(f"--output {output!r}: a {args.format} model is a file ending with {extension}.")
    if args.format != "tflite" and (args.quantization != "float32" or args.input_size):
        raise ValueError("--quantization and --input-size apply to --format tflite only.")
    if args.format == "tflite" and args.max_side is not None:
        raise ValueError("--max-side is not built into a TFLite model; export another --format, or resize the "
                         "images before the model.")
    if os.path.lexists(output) and not args.overwrite:  # before the (slow) model load
        raise FileExistsError(f"--output {output!r} already exists; remove it, choose another --output or pass "
                              "--overwrite.")
    model = _model_from_args(args)
    common = dict(scales=args.scales, flip=args.flip, overwrite=args.overwrite, source=args.model,
                  class_names=runs.saved_class_names(args.model))
    if args.format == "saved_model":
        export.export_saved_model(model, output, max_side=args.max_side, **common)
    elif args.format == "tflite":
        export.export_tflite(model, output, quantization=args.quantization, input_size=args.input_size, **common)
    elif args.format == "openvino":
        export.export_openvino(model, output, max_side=args.max_side, **common)
    else:
        export.export_onnx(model, output, max_side=args.max_side, **common)
    print(f"exported {model.name} ({_num_classes(model)} classes) from {args.model} to {output} ({args.format}"
          + (f", {args.quantization}" if args.format == "tflite" else "") + ")")
    return 0


def _num_classes(model):
    """The segmentation classes of a model: its logits' channels (a multi-task model's ``segmentation`` output)."""
    shape = model.output_shape
    return (shape["segmentation"] if isinstance(shape, dict) else shape)[-1]


def _convert(args):
    if args.format == "slim":
        from refinenet_tf.convert import slim as converter

        model = converter.convert_checkpoint(args.checkpoint, args.output, num_classes=args.num_classes,
                                             ema=args.ema, overwrite=args.overwrite)
    else:
        from refinenet_tf.convert import pytorch as converter

        model = converter.convert_checkpoint(args.checkpoint, args.output, architecture=args.architecture,
                                             num_classes=args.num_classes, overwrite=args.overwrite)
    print(f"converted {args.checkpoint} ({args.format}) into {model.name} ({_what_it_holds(model)}): {args.output}")
    return 0


def _what_it_holds(model):
    """What a converted model is, for the line ``convert`` prints: its classes (and where they came from) and a
    multi-task model's outputs, or that it is a backbone alone, which ``--backbone-weights`` takes."""
    from refinenet_tf.models import backbones

    if model.name in backbones.list_backbones():  # a backbone checkpoint converts to the backbone alone
        return f"the {model.name} backbone alone; give the file as --backbone-weights / backbone_weights="
    text = f"{_num_classes(model)} classes"
    if getattr(model, "inferred_num_classes", None) is not None:
        text += ", read from the checkpoint"
    if isinstance(model.output, dict):
        text += "; outputs: " + ", ".join(model.output)
    return text


def _add_engine_arguments(parser):
    from refinenet_tf.inference.engines import ENGINES, PRECISIONS

    parser.add_argument("--engine", choices=list(ENGINES),
                        help="what runs the model: keras (the model itself, the default), saved_model, tflite, "
                        "onnxruntime or openvino (converted once; the last two need their extras); default for an "
                        "exported --model: the engine that reads it")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="bfloat16: the model's arithmetic in bfloat16 (keras, saved_model, openvino; fast on "
                        "CPUs with AMX or avx512_bf16) (default: %(default)s)")


def _add_model_arguments(parser):
    parser.add_argument("--model", required=True, help="a .keras file, a SavedModel folder written by model.save, "
                        "a training run folder (best weights), a .weights.h5 file in a run folder, or a preset name; "
                        "predict and evaluate also take an exported model (SavedModel folder, .tflite, .onnx, "
                        "OpenVINO .xml)")
    parser.add_argument("--num-classes", type=_positive_int, help="classes (default: the model's; presets: 21)")
    parser.add_argument("--weights", help="a .weights.h5 file to load into the model")
    parser.add_argument("--backbone-weights", default="imagenet",
                        help="for a preset name: imagenet (downloaded by keras), none, or a file (default: "
                        "%(default)s)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="run a preset name without --weights anyway: its decoder is untrained (refused "
                        "otherwise, before anything is downloaded)")


def _add_augmentation_arguments(parser):
    parser.add_argument("--scales", type=_positive_float, nargs="+", default=[1.0], metavar="SCALE",
                        help="average over these input scales, e.g. 0.5 0.75 1 1.25 1.5 1.75 (default: 1)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                        help="also average over left-right mirrored inputs (default: off)")
    parser.add_argument("--max-side", type=_positive_int,
                        help="shrink inputs whose longer side exceeds this before the model (outputs keep the "
                        "input size); bounds memory on huge images")


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _non_negative_int(text):
    value = _positive_int(text) if text.strip() != "0" else 0
    return value


_SPEC_HELP = "data spec: voc:PATH, voc_aug:PATH, folder:IMAGES:MASKS[?options] or tfds:NAME[:DATA_DIR]"


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores like the new one and warns on stderr."""

    def __init__(self, option_strings, dest, new_flag, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_demo_parser(commands):
    demo = commands.add_parser("demo", help="train a small RefineNet on a generated dataset (no downloads)",
                               description="Generate a synthetic VOC-layout dataset of shapes, train the slim "
                               "RefineNet (64 wide) on MobileNetV2 from scratch on the CPU, evaluate it on held-out scenes, "
                               "keep the checkpoint and write prediction overlays. --task joint: generated RGB-D "
                               "scenes (some without masks, some without depth), the multi-task Light-Weight "
                               "RefineNet, held-out mean IoU and depth RMSE next to the constant-depth baseline.")
    demo.add_argument("--task", choices=["segmentation", "joint"], default="segmentation",
                      help="segmentation (make demo) or joint segmentation and depth (default: %(default)s)")
    demo.add_argument("--output", default=None,
                      help="folder for the data, the run and the PNGs (default: checkpoints/demo, "
                      "checkpoints/demo_joint for --task joint)")
    demo.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: the demo recipe's)")
    demo.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                      help="training steps per epoch (default: one pass over the training scenes)")
    demo.add_argument("--num-train", type=_positive_int, default=None,
                      help="training scenes (default: 400; 300 for --task joint)")
    demo.add_argument("--num-val", type=_positive_int, default=None,
                      help="held-out scenes (default: 100; 60 for --task joint)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the run (default: %(default)s)")
    demo.set_defaults(run=_demo)


def _add_train_parser(commands):
    train = commands.add_parser("train", help="train a model with a recipe (model.fit)",
                                description="Train with a recipe's model and optimizer; the run folder gets the "
                                "resolved config, best and last weights, a BackupAndRestore backup (an "
                                "interrupted run resumes), TensorBoard logs and a CSV log.")
    train.add_argument("--recipe", choices=recipes.list_recipes(), metavar="RECIPE",
                       help=f"training recipe, one of {', '.join(recipes.list_recipes())} (required)")
    train.add_argument("--preset", dest="recipe", choices=recipes.list_recipes(), metavar="RECIPE",
                       action=_DeprecatedAlias, new_flag="--recipe", help=argparse.SUPPRESS)  # deprecated spelling
    train.add_argument("--data", required=True, metavar="SPEC", help="training data spec (see check-data); RGB-D "
                       "for a multi-task recipe: folder:IMAGES:MASKS?depth=DEPTHS&depth_scale=...")
    train.add_argument("--val-data", metavar="SPEC", help="validation data spec (best weights by its mean IoU; "
                       "multi-task: by mean IoU and depth RMSE both improving)")
    train.add_argument("--train-split", default="train", help="split of --data (default: %(default)s)")
    train.add_argument("--val-split", default="val", help="split of --val-data (default: %(default)s)")
    train.add_argument("--num-classes", type=_positive_int, help="classes (default: the data's; VOC: 21)")
    train.add_argument("--run-dir", help="run folder (default: a new checkpoints/RECIPE-YYYYmmdd-HHMMSS); one that "
                       "holds a finished run is refused unless --overwrite")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --run-dir (finished or interrupted) instead of refusing or resuming")
    train.add_argument("--epochs", type=_positive_int, help="epochs (default: the recipe's)")
    train.add_argument("--batch-size", type=_positive_int, help="per-replica batch size (default: the recipe's)")
    train.add_argument("--crop-size", type=_positive_int, help="training crop side (default: the recipe's)")
    train.add_argument("--lr", type=float, help="backbone learning rate (default: the recipe's)")
    train.add_argument("--steps-per-epoch", type=_positive_int, help="default: one pass over the data")
    train.add_argument("--backbone-weights", default="imagenet",
                       help="imagenet (downloaded by keras), none, or a weights file (default: %(default)s)")
    train.add_argument("--strategy", default="default", choices=options.STRATEGIES,
                       help="tf.distribute strategy (default: %(default)s)")
    train.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                       help="XLA (default: on with a GPU, off on CPU)")
    train.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=False,
                       help="mixed_float16 on GPU, mixed_bfloat16 on CPU (default: off)")
    train.add_argument("--image-every", type=int, default=1,
                       help="TensorBoard prediction images every N epochs, 0: never (default: %(default)s)")
    train.add_argument("--init-from", metavar="WEIGHTS", help="start from these weights (.weights.h5)")
    train.add_argument("--teacher", metavar="MODEL",
                       help="multi-task recipes: a run folder or .keras multi-task model whose predictions fill "
                       "each training example's missing mask or depth (distillation)")
    train.add_argument("--loss-weights", type=float, nargs=2, metavar=("SEGMENTATION", "DEPTH"),
                       help="multi-task recipes: the two tasks' loss weights (default: the recipe's, 0.5 0.5)")
    train.add_argument("--depth-loss", choices=["berhu", "l1"],
                       help="multi-task recipes: the depth loss (default: the recipe's, berhu)")
    train.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="continue an interrupted run in --run-dir with the same settings (default: on)")
    train.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    train.set_defaults(run=_train, required_options={"recipe": "--recipe"})


def _add_benchmark_parser(commands):
    from refinenet_tf.inference.engines import ENGINES, PRECISIONS

    bench = commands.add_parser(
        "benchmark", help="the engines side by side on this machine (make bench)",
        description="For each model: every engine (keras, saved_model, tflite, onnxruntime, openvino) in each "
        "precision, each in a fresh process: latency of one uint8 image, effective GFLOP/s as a ratio to the "
        "matmul rate of the same precision measured in the same run, labels equal to the keras float32 engine's "
        "(and the multi-task model's depth difference); then the same agreement on a trained model and real "
        "images. An engine whose extra is missing gets its one-line error in the table.")
    bench.add_argument("--models", nargs="+", default=list(benchmarks.BENCHMARK_MODELS), metavar="MODEL",
                       help="presets (random weights), 'all', or trained models: run folders, .keras files "
                       "(default: %(default)s)")
    bench.add_argument("--size", type=_positive_int, default=512, help="square input side (default: %(default)s)")
    bench.add_argument("--runs", type=_positive_int, default=5, help="timed calls per engine (default: %(default)s)")
    bench.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(benchmarks.BENCHMARK_ENGINES),
                       help="engines to compare (default: all)")
    bench.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS),
                       help="precisions (default: %(default)s; engines without bfloat16 say so in the table)")
    bench.add_argument("--matmul-size", type=_positive_int, default=4096, metavar="N",
                       help="side of the matmul that measures the compute ceiling (default: %(default)s)")
    bench.add_argument("--multitask", action=argparse.BooleanOptionalAction, default=True,
                       help=f"rows for the multi-task model ({benchmarks.MULTITASK_MODEL}, 40 classes) with its "
                       "depth difference (default: on)")
    bench.add_argument("--multitask-size", nargs=2, type=_positive_int, default=[480, 640],
                       metavar=("HEIGHT", "WIDTH"), help="its input size (default: the paper's 480 640)")
    bench.add_argument("--agreement-model", metavar="MODEL",
                       help="a trained model (run folder, .keras file) whose labels each engine is compared on, "
                       "e.g. checkpoints/demo/run")
    bench.add_argument("--agreement-images", nargs="+", metavar="IMAGE",
                       help="real images for --agreement-model (default: a synthetic scene)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(run=_benchmark)


def _add_doctor_parser(commands):
    doctor = commands.add_parser(
        "doctor", help="devices, XLA, mixed precision and versions, then a short training run",
        description="Print this machine's devices, whether XLA and float16 / bfloat16 run on each, the TF and "
        "tf-keras versions, then train a preset a few steps on generated scenes and print images/s, how many "
        "times the train function was traced and the loss of the first and last steps. Run it first on a new "
        "machine.")
    doctor.add_argument("--model", default="lw_mobilenetv2", metavar="PRESET",
                        help="model preset, random weights (default: %(default)s)")
    doctor.add_argument("--size", type=_positive_int, default=128, help="square scene side (default: %(default)s)")
    doctor.add_argument("--batch-size", type=_positive_int, default=4,
                        help="batch size per replica (default: %(default)s)")
    doctor.add_argument("--steps", type=_positive_int, default=20, help="training steps (default: %(default)s)")
    doctor.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA train step (default: on with a GPU, off on CPU)")
    doctor.add_argument("--mixed-precision", default="off",
                        choices=["off", "on", "mixed_float16", "mixed_bfloat16"],
                        help="on: mixed_float16 on GPU, mixed_bfloat16 otherwise (default: %(default)s)")
    doctor.add_argument("--strategy", default="default", choices=options.STRATEGIES,
                        help="tf.distribute strategy, e.g. mirrored for all GPUs (default: %(default)s)")
    doctor.set_defaults(run=_doctor)


def _add_evaluate_parser(commands):
    evaluate = commands.add_parser("evaluate", help="mean IoU, per-class IoU and confusion matrix on a dataset",
                                   description="Run a model on every image of a dataset at its original label "
                                   "resolution (whole images; optional multi-scale and flip averaging) and print "
                                   "the per-class IoU table; --output also saves the confusion matrix (CSV, NPY) "
                                   "and metrics.json. A multi-task model on RGB-D data also gets the depth table "
                                   "(RMSE linear and log, abs rel, sq rel, delta < 1.25, 1.25^2, 1.25^3).")
    _add_model_arguments(evaluate)
    evaluate.add_argument("--data", required=True, metavar="SPEC", help=_SPEC_HELP)
    evaluate.add_argument("--split", default="val", help="split (default: %(default)s)")
    evaluate.add_argument("--output", metavar="DIR", help="write confusion_matrix.csv/.npy and metrics.json here")
    evaluate.add_argument("--limit", type=_positive_int, help="evaluate only the first N images")
    _add_engine_arguments(evaluate)
    evaluate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                          help="progress bar (default: on)")
    _add_augmentation_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _add_predict_parser(commands):
    predict = commands.add_parser("predict", help="segment image files into palette PNGs and overlays",
                                  description="Segment images (files, folders, glob patterns) and write, per "
                                  "image NAME, NAME.png (class indices, palette PNG at the image's size), "
                                  "NAME_overlay.png and optionally NAME_probabilities.npy, plus legend.png. A "
                                  "multi-task model also writes NAME_depth.png (colour-mapped depth) and "
                                  "NAME_depth_mm.png (16-bit, millimetres).")
    _add_model_arguments(predict)
    predict.add_argument("--output", required=True, metavar="DIR", help="output folder (created if missing)")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    predict.add_argument("--probabilities", action="store_true", help="also write float32 probabilities (.npy)")
    predict.add_argument("--palette", help="colours: a palette PNG (its palette) or a JSON list of [r, g, b] "
                         "(default: VOC's)")
    _add_engine_arguments(predict)
    predict.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    predict.add_argument("--max-depth", type=_positive_float, metavar="METRES",
                         help="multi-task models: the depth drawn darkest in NAME_depth.png (default: each "
                         "image's farthest)")
    predict.add_argument("--skip-errors", action="store_true",
                         help="go on past unreadable images (listed at the end; exit status 1)")
    predict.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                         help="progress bar (default: on)")
    predict.add_argument("--max-pixels", type=_non_negative_int, default=4096 * 4096, metavar="N",
                         help="refuse larger images, naming them (default: %(default)s = 4096x4096; 0: no "
                         "limit); the probabilities take 4 bytes per class and pixel")
    _add_augmentation_arguments(predict)
    predict.set_defaults(run=_predict)


def _add_export_parser(commands):
    export_parser = commands.add_parser(
        "export", help="export a SavedModel, TFLite, ONNX or OpenVINO model for serving",
        description="Export a model for serving without refinenet_tf: a SavedModel (signatures serving_default: "
        "uint8 images -> labels, probabilities; serving_bytes: encoded images), a TFLite file, an ONNX file or an "
        "OpenVINO IR (.xml and .bin), each with the class names and palette in it (a TFLite file: beside it, "
        ".tflite.json). Written under a temporary name and renamed when complete.")
    _add_model_arguments(export_parser)
    export_parser.add_argument("--output", required=True,
                               help="SavedModel folder, or .tflite / .onnx / OpenVINO .xml file")
    export_parser.add_argument("--format", default="saved_model", choices=options.EXPORT_FORMATS,
                               help="format (default: %(default)s)")
    export_parser.add_argument("--quantization", default="float32", choices=options.QUANTIZATIONS,
                               help="TFLite weights: float32, float16, or int8 dynamic-range (default: "
                               "%(default)s)")
    export_parser.add_argument("--input-size", type=_size, metavar="HxW",
                               help="TFLite input size (default: any size)")
    export_parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    _add_augmentation_arguments(export_parser)
    export_parser.set_defaults(run=_export)


def _add_check_data_parser(commands):
    check = commands.add_parser("check-data", help="scan a dataset and report every bad file",
                                description="Read every image and mask of a dataset and report every problem "
                                "(unreadable files, size mismatches, mask values out of range, ...); exit status 1 "
                                "if there is any.")
    check.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    check.add_argument("--split", default="train", help="split (default: %(default)s)")
    check.add_argument("--num-classes", type=_positive_int, help="classes (default: the source's; VOC: 21)")
    check.add_argument("--ignore-value", type=int, help="mask value to ignore (default: the source's; 255)")
    check.set_defaults(run=_check_data)


def _add_convert_parser(commands):
    convert = commands.add_parser("convert", help="convert a TF-slim or official PyTorch checkpoint to .keras",
                                  description="Read a foreign checkpoint (never unpickling code), map every tensor "
                                  "by name and shape onto a refinenet_tf model and write it as a .keras file that "
                                  "evaluate, predict and export take as they are.")
    formats = convert.add_subparsers(dest="format", required=True, metavar="FORMAT")
    slim = formats.add_parser("slim", help="a TF1 / TF-slim checkpoint: the reference code's training or TF-slim's "
                              "ImageNet resnet_v1 (backbone only)",
                              description="Convert a checkpoint written by the reference TF-slim RefineNet code "
                              "(resnet_v1_101/... and feature_fusion/... variables) into the seed_resnet_v1_101 "
                              "model.")
    slim.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint prefix (model.ckpt-1000) or folder")
    slim.add_argument("--output", required=True, help="the .keras file to write")
    slim.add_argument("--num-classes", type=_positive_int, default=None,
                      help="classes of the classifier (default: read from the checkpoint)")
    slim.add_argument("--ema", action="store_true",
                      help="take the ExponentialMovingAverage shadow variables (an error if there are none)")
    slim.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    slim.set_defaults(run=_convert)
    torch = formats.add_parser("pytorch", help="an official PyTorch release checkpoint (.pth, .pth.tar, .ckpt)",
                               description="Convert a checkpoint of the official Light-Weight RefineNet / RefineNet "
                               "/ multi-task RefineNet PyTorch releases; loaded with torch.load(weights_only=True), so no pickled code "
                               "runs (needs the [torch] extra).")
    torch.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pth, .pth.tar or .ckpt file")
    torch.add_argument("--architecture", required=True, metavar="PRESET",
                       help="the official structure the checkpoint holds, e.g. lw_resnet50_official")
    torch.add_argument("--output", required=True, help="the .keras file to write")
    torch.add_argument("--num-classes", type=_positive_int, default=None,
                       help="classes (default: inferred from the checkpoint's classifier, and reported)")
    torch.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    torch.set_defaults(run=_convert)


def build_parser():
    """The argument parser of ``refinenet-tf`` (also the source of the CLI reference): one function per
    subcommand; building it (and ``--help``) imports no TensorFlow."""
    parser = argparse.ArgumentParser(prog="refinenet-tf", description="RefineNet semantic segmentation "
                                     "for TensorFlow / Keras.")
    parser.add_argument("--version", action="version", version=f"refinenet_tf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo_parser, _add_train_parser, _add_benchmark_parser, _add_doctor_parser,
                _add_evaluate_parser, _add_predict_parser, _add_export_parser,
                _add_check_data_parser, _add_convert_parser):
        add(commands)
    for subparser in _leaf_parsers(parser):
        subparser.add_argument("--verbose", action="store_true",
                               help="also show TensorFlow's own start-up and log lines (hidden by default)")
        subparser.set_defaults(parser=subparser)
    return parser


def _leaf_parsers(parser):
    """The parsers that run a command (a subcommand's own subcommands, for ``convert``)."""
    nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        return [parser]
    return [leaf for action in nested for sub in dict.fromkeys(action.choices.values()) for leaf in _leaf_parsers(sub)]


def main(argv=None):
    """Runs ``refinenet-tf`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for dest, flag in getattr(args, "required_options", {}).items():
        if getattr(args, dest) is None:
            args.parser.error(f"the following arguments are required: {flag}")
    if not args.verbose:
        _quiet_tensorflow()
    try:
        return args.run(args)
    except (ValueError, OSError, FloatingPointError, ImportError) as error:
        print(f"refinenet-tf {args.command}: error: {as_flags(str(error), args.parser)}", file=sys.stderr)
        return 2
    except Exception as error:  # bad data met inside tf.data: its first line names the file and the fix
        import tensorflow as tf

        if not isinstance(error, tf.errors.InvalidArgumentError):
            raise
        print(f"refinenet-tf {args.command}: error: {as_flags(_first_line(error.message), args.parser)}",
              file=sys.stderr)
        return 2


def _quiet_tensorflow():
    """Imports TensorFlow and starts its devices with the process's standard error closed, so that a command
    prints the package's own lines only: TensorFlow's start-up lines ("All log messages before
    absl::InitializeLog()", "Could not find cuda drivers", "oneDNN custom operations are on", cuInit) come from its
    C++ side, some before its log level is read. Its later C++ and Python log lines are limited to errors. Does
    nothing where TensorFlow is already loaded (a caller's process keeps its own settings)."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_logical_devices()  # starts the devices (the CUDA probe's lines) while stderr is closed
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")


# Python arguments whose flag is not their name with dashes.
_RENAMED = {"learning_rate": "lr", "spec": "model", "output_dir": "output", "path": "output", "jit_compile": "jit"}


def _flags(parser):
    """``{python argument: (flag, BooleanOptionalAction?)}`` for the flags of ``parser``."""
    by_dest = {}
    for action in parser._actions:
        long = [option for option in action.option_strings if option.startswith("--") and
                not option.startswith("--no-")]
        if long and action.dest not in by_dest and not isinstance(action, _DeprecatedAlias):
            by_dest[action.dest] = (long[0], isinstance(action, argparse.BooleanOptionalAction))
    flags = dict(by_dest)
    for name, dest in _RENAMED.items():
        if dest in by_dest:
            flags[name] = by_dest[dest]
    return flags


def as_flags(message, parser):
    """A library error in the command's words: ``num_classes=3`` -> ``--num-classes 3``, ``overwrite=True`` ->
    ``--overwrite``, ``resume=False`` -> ``--no-resume``, and a bare ``run_dir`` -> ``--run-dir`` (names with
    an underscore only); quoted text (file names) is left as it is.

    Example:
        >>> parser = build_parser()
        >>> train = parser._subparsers._group_actions[0].choices["train"]
        >>> as_flags("run_dir='runs/a' holds a finished run; pass overwrite=True or choose another run_dir.", train)
        "--run-dir 'runs/a' holds a finished run; pass --overwrite or choose another --run-dir."
    """
    flags = _flags(parser)
    parts = re.split(r"('[^']*'|\"[^\"]*\")", message)
    for index in range(0, len(parts), 2):  # the text between quoted strings
        text = parts[index]
        for name, (flag, negatable) in sorted(flags.items(), key=lambda item: -len(item[0])):
            text = re.sub(rf"\b{name}=True\b", flag, text)
            text = re.sub(rf"\b{name}=False\b", "--no-" + flag[2:] if negatable else f"no {flag}", text)
            text = re.sub(rf"\b{name}=\s?", flag + " ", text)
            if "_" in name:
                text = re.sub(rf"(?<![\w-]){name}\b", flag, text)
        parts[index] = text
    return "".join(parts)


def _first_line(message):
    """The line of a TensorFlow error that holds our own message (``DataError: ...``), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "DataError:" in line:
            return line.split("DataError:", 1)[1].strip()
    return lines[0] if lines else message


if __name__ == "__main__":
    sys.exit(main())
