"""`sperm-edge train` and `sperm-edge evaluate`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sperm_edge.cli._app import app
from sperm_edge.data.augment import Augment
from sperm_edge.data.smears import FOLDS
from sperm_edge.data.verifier_set import FIELD_SLIDES
from sperm_edge.errors import SpermEdgeError
from sperm_edge.train.config import AdaptConfig, Balance, EvalSplit, Keep, TrainConfig

VERIFIER_ARCH, VERIFIER_SIZE, VERIFIER_EPOCHS = "efficientnet_lite0", 64, (2, 4)

console = Console()


class RichReporter:
    """Draws a bar per epoch with the running loss, and a line per finished epoch."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = None
        self.loss = 0.0
        self.steps = 0

    def phase_start(self, phase: int, epochs: int, trainable: int, total: int) -> None:
        what = "backbone frozen: CBAM + head" if trainable < total else "all layers"
        console.rule(f"phase {phase}: {epochs} epochs, {what}, {trainable:,} of {total:,} parameters trainable")

    def epoch_start(self, phase: int, epoch: int, steps: int) -> None:
        self.progress.start()
        self.loss, self.steps = 0.0, 0
        self.task = self.progress.add_task(f"phase {phase} epoch {epoch}", total=steps, loss=0.0)

    def step(self, loss: float) -> None:
        self.steps += 1
        self.loss += (loss - self.loss) / self.steps
        self.progress.update(self.task, advance=1, loss=self.loss)

    def epoch_end(self, record: dict) -> None:
        self.progress.remove_task(self.task)
        self.progress.stop()
        console.print(
            f"phase {record['phase']} epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
            f"val acc {record['val_accuracy']:.3f}  val macro-F1 {record['val_macro_f1']:.3f}  "
            f"lr {record['lr']:.2e}"
        )


def print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title)
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    console.print(
        f"accuracy [bold]{metrics['accuracy']:.4f}[/]  macro-F1 [bold]{metrics['macro_f1']:.4f}[/]  "
        f"ECE {metrics['ece']:.4f}  (n={metrics['n']})"
    )


@app.command()
def train(
    data: Path = typer.Option(..., help="Class-folder data set (one sub-folder per class)."),
    arch: str = typer.Option("cbam_efficientnet_lite0", help="Architecture name (see `sperm-edge models`)."),
    out: Path = typer.Option(Path("runs/latest"), help="Run folder to write."),
    phase1_epochs: int = typer.Option(None, help="Epochs with the backbone frozen (default: the data set preset's)."),
    phase2_epochs: int = typer.Option(None, help="Epochs with all layers trainable (default: the preset's)."),
    phase1_lr: float = typer.Option(TrainConfig.phase1_lr, help="Learning rate of phase 1."),
    phase2_lr: float = typer.Option(TrainConfig.phase2_lr, help="Peak learning rate of phase 2 (warm-up then cosine)."),
    batch_size: int = typer.Option(TrainConfig.batch_size, min=1),
    workers: int = typer.Option(TrainConfig.workers, min=0, help="Data-loading processes (0: augment in-process)."),
    img_size: int = typer.Option(None, help="Input size (default: the preset's)."),
    folds: int = typer.Option(1, min=1, help="Stratified k-fold cross-validation when > 1."),
    fold: int = typer.Option(
        None,
        min=1,
        help="With --folds: train this fold only, into OUT/fold-K (a job of its own; copy the folders together).",
    ),
    seed: int = typer.Option(0),
    pretrained: bool = typer.Option(True, help="Start from ImageNet weights (offline for Lite0)."),
    weights: Path = typer.Option(None, help="Local safetensors weights for the model or its backbone."),
    balance: Balance = typer.Option(Balance.loss, help="Class balance: weighted loss, weighted sampler, or none."),
    mixup: float = typer.Option(0.0, help="MixUp Beta(alpha, alpha); 0 disables."),
    label_smoothing: float = typer.Option(0.0, min=0.0, max=0.5),
    augment: Augment = typer.Option(
        "standard", help="standard, or robust: plus stain (HED), gamma, greyscale, noise, JPEG and scale jitter."
    ),
    alone: float = typer.Option(
        TrainConfig.alone, min=0.0, max=1.0, help="Share of training views showing the crop's cell alone on its glass."
    ),
    stain: float = typer.Option(
        TrainConfig.stain, min=0.0, max=1.0, help="Share of training views stained paler or darker (0.5-1.3x density)."
    ),
    patience: int = typer.Option(TrainConfig.patience, min=1, help="Early-stopping patience (epochs, val macro-F1)."),
    ema_decay: float = typer.Option(
        TrainConfig.ema_decay, min=0.0, max=0.9999, help="Per-step EMA of the weights (validated and kept); 0 disables."
    ),
    keep: Keep = typer.Option(
        TrainConfig.keep, help="Weights to keep: best (best validation macro-F1 epoch) or last (the final ones)."
    ),
    teacher: Path = typer.Option(
        None, help="Run folder of a larger model trained on the same split (and folds) to distil from."
    ),
    distill: float = typer.Option(0.5, min=0.0, max=1.0, help="With --teacher: weight of the distillation loss."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
) -> None:
    """Fit a model in two phases (frozen backbone, then all layers) and test the weights it keeps (--keep)."""
    from sperm_edge.model import get_entry
    from sperm_edge.train.distributed import world_from_env
    from sperm_edge.train.run import train as run_training

    get_entry(arch)
    cfg = TrainConfig(
        data=str(data),
        arch=arch,
        out=str(out),
        phase1_epochs=phase1_epochs,
        phase2_epochs=phase2_epochs,
        phase1_lr=phase1_lr,
        phase2_lr=phase2_lr,
        batch_size=batch_size,
        workers=workers,
        img_size=img_size,
        seed=seed,
        pretrained=pretrained,
        weights=str(weights) if weights else None,
        balance=balance.value,
        mixup=mixup,
        label_smoothing=label_smoothing,
        augment=augment.value,
        alone=alone,
        stain=stain,
        patience=patience,
        ema_decay=ema_decay,
        keep=keep.value,
        teacher=str(teacher) if teacher else None,
        distill=distill if teacher else 0.0,
        device=device,
    )
    world = world_from_env()
    if not world.main:  # under torchrun rank 0 shows progress; the others speak only of trouble
        logging.getLogger("sperm_edge").setLevel(logging.WARNING)
    reporter = RichReporter() if world.main else None
    result = run_training(cfg, folds=folds, resume=resume, reporter=reporter, fold=fold, world=world)
    if not world.main:  # under torchrun: rank 0 reports
        return
    if folds > 1 and fold is None:
        console.print(
            f"{folds}-fold accuracy [bold]{result['accuracy']['mean']:.4f} ± {result['accuracy']['std']:.4f}"
            f"[/]  macro-F1 [bold]{result['macro_f1']['mean']:.4f} ± {result['macro_f1']['std']:.4f}[/]"
        )
        console.print(f"written: {out}/fold-*/, {out}/cv.json")
    else:
        print_metrics(f"test split of {data}" + (f", fold {fold} of {folds}" if fold else ""), result)
        folder = out if fold is None else out / f"fold-{fold}"
        console.print(f"written: {folder}/best.safetensors, best.json, metrics.json, curves.png, confusion.png")


@app.command("train-verifier")
def train_verifier(
    data: Path = typer.Option(..., help="Folder holding the real sets: hushem/ and/or smids/."),
    out: Path = typer.Option(..., help="Folder to write: images/ (the training images) and model/ (the run)."),
    arch: str = typer.Option(VERIFIER_ARCH, help="Architecture (see `sperm-edge models`)."),
    img_size: int = typer.Option(VERIFIER_SIZE, min=32, help="Input size: small, the question is coarse."),
    phase1_epochs: int = typer.Option(VERIFIER_EPOCHS[0], min=0, help="Epochs with the backbone frozen."),
    phase2_epochs: int = typer.Option(VERIFIER_EPOCHS[1], min=0, help="Epochs with all layers trainable."),
    slides: int = typer.Option(
        FIELD_SLIDES,
        min=0,
        help="Real-crop slides per set whose localiser finds join the images (cut as in a run; each slide in the "
        "next look of `data real-field --look`, the held-out look left out).",
    ),
    smears: Path = typer.Option(
        None,
        "--fields",
        help="Real smear fields (heads.csv + images/): the objects the localiser finds on them join the images, "
        "cut as in a run. Default: DATA/smears when it is there.",
    ),
    field_folds: int = typer.Option(FOLDS, min=2, help="Folds over the smear fields (with --field-fold)."),
    field_fold: int = typer.Option(
        None, min=1, help="Leave this fold of the smear fields out (a benchmark scores it with this verifier)."
    ),
    seed: int = typer.Option(0, help="Seed of the negatives drawn and of training."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
) -> None:
    """Train the head verifier: is this crop one sperm head? (`sperm-edge export --verifier RUN` ships it)."""
    from sperm_edge.data.smears import is_smear_folder
    from sperm_edge.data.verifier_set import VERIFIER_IMAGES, VERIFIER_MODEL, write_verifier_set
    from sperm_edge.model import get_entry
    from sperm_edge.train.run import train as run_training

    get_entry(arch)
    if smears is None and is_smear_folder(data / "smears"):
        smears = data / "smears"
    if smears is not None and not is_smear_folder(smears):
        raise SpermEdgeError(f"--fields {smears}: not a smear-field folder (heads.csv and images/ are needed)")
    if field_fold is not None and (smears is None or field_fold > field_folds):
        raise SpermEdgeError(f"--field-fold {field_fold} needs smear fields and at most --field-folds {field_folds}")
    images, model = out / VERIFIER_IMAGES, out / VERIFIER_MODEL
    if not (images / "sources.csv").is_file():  # a rerun keeps the images it drew before
        counts = write_verifier_set(data, images, seed=seed, fields=slides, smears=smears, field_fold=field_fold,
                                    field_folds=field_folds)  # fmt: skip
        console.print("verifier images: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    cfg = TrainConfig(data=str(images), arch=arch, out=str(model), phase1_epochs=phase1_epochs,
                      phase2_epochs=phase2_epochs, img_size=img_size, seed=seed, device=device)  # fmt: skip
    result = run_training(cfg, resume=(model / "last.json").is_file(), reporter=RichReporter())
    print_metrics(f"verifier, test split of {images}", result)
    console.print(f"written: {model}/best.safetensors, best.json, metrics.json; ship it: sperm-edge export RUN "
                  f"--out BUNDLE --verifier {out}")  # fmt: skip


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Run folder or its best.safetensors."),
    data: Path = typer.Option(None, help="Labelled class-folder data set (default: the run's own data)."),
    split: EvalSplit = typer.Option(
        EvalSplit.test, help="test, val or train: that split of the run's own data; all: every image of --data."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the metrics here (and a confusion PNG beside it)."),
    device: str = typer.Option("auto"),
) -> None:
    """Accuracy, macro-F1, per-class scores, confusion matrix and calibration of a checkpoint.

    Scores the run's own test split unless told otherwise, and warns when the images scored include
    ones the run trained on."""
    from sperm_edge.train.evaluate import evaluate as run_evaluate

    report = run_evaluate(checkpoint, data, json_out, device, split.value)
    scored = report["scored"]
    print_metrics(f"{checkpoint} on {scored['n']} images ({scored['split']} of {scored['data']})", report)
    if scored["seen_in_training"]:
        console.print(
            f"[yellow]warning:[/] {scored['seen_in_training']} of these {scored['n']} images were in the run's "
            "train or val split: the figures are inflated"
        )
    if json_out:
        console.print(f"written: {json_out}, {json_out.with_suffix('.png')}")


@app.command()
def calibrate(
    checkpoint: Path = typer.Argument(..., help="Run folder or its best.safetensors (its data must be here)."),
    device: str = typer.Option("auto"),
) -> None:
    """Fit temperature scaling on the run's validation split and store it in the checkpoint.

    Training does this by itself; this is for runs trained before it. Writes reliability.png beside it."""
    from sperm_edge.train.calibrate import RELIABILITY_PNG, calibrate_run

    result = calibrate_run(checkpoint, device)
    console.print(
        f"temperature {result['temperature']:.3f} (fitted on {result['n_val']} validation images); "
        f"test ECE {result['ece']:.3f} -> {result['ece_calibrated']:.3f} on {result['n_test']} images"
    )
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    console.print(f"written: {folder}/best.json, {RELIABILITY_PNG}")


@app.command()
def adapt(
    source: Path = typer.Argument(..., help="Run folder, checkpoint or bundle to adapt."),
    data: Path = typer.Option(..., help="The new lab's labelled class folders."),
    per_class: int = typer.Option(..., "--per-class", min=2, help="Labelled crops per class to adapt on (K)."),
    out: Path = typer.Option(..., help="Run folder to write (what `sperm-edge export` takes)."),
    seed: int = typer.Option(0, help="Seed of the K crops drawn per class and of the augmentations."),
    steps: int = typer.Option(AdaptConfig.steps, min=1, help="Training steps on the cached features."),
    stages: int | None = typer.Option(
        None, min=0, help="The backbone's last block stages trained too (0: frozen) [default: 1 for EfficientNet]."
    ),
) -> None:
    """Fit a model to another lab from K labelled crops per class: CBAM and head (and --stages) on a frozen backbone.

    The rest of the new lab's crops are its test split (metrics.json); the temperature is refitted."""
    from sperm_edge.train.adapt import adapt as run_adapt

    metrics = run_adapt(source, data, out, AdaptConfig(per_class=per_class, seed=seed, steps=steps, stages=stages))
    print_metrics(f"adapted, on the {metrics['n']} crops of {data} not used to adapt", metrics)
    console.print(
        f"written: {out}/best.safetensors, best.json, metrics.json (temperature {metrics['temperature']:.3f})"
    )


@app.command()
def models() -> None:
    """List the architectures and their preprocessing."""
    from sperm_edge.model.registry import _REGISTRY

    table = Table(title="architectures")
    for column in ("name", "input", "mean/std", "ImageNet weights", "description"):
        table.add_column(column)
    for entry in _REGISTRY.values():
        table.add_row(
            entry.name,
            str(entry.default_img_size),
            f"{entry.mean[0]}/{entry.std[0]}",
            entry.pretrained or "none",
            entry.description,
        )
    console.print(table)
