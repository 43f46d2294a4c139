"""The runtime: classify the cells of a microscope stream on the fastest engine available.

One module per job:

- `sources`     frames by URI (cameras, CSI, RTSP, files, images, folders, globs), reopened when they drop
- `localize`    classical OpenCV cell finding on stained smears, square crops at the training scale
- `tracking`    slide-motion-compensated tracking, so each cell is counted once
- `backends`    ONNX Runtime (CPU, CUDA, TensorRT EPs), native TensorRT, PyTorch; `open_backend(bundle, "auto")`
- `pipeline`    capture, cell finding, inference and output in threads with bounded queues and stage timings
- `flagging`    what a person should look at; ring buffer and atomic files
- `events`      the JSONL event log
- `outputs`     everything a run writes, and the loop that drives it
- `report`      cells per class, % normal with a Wilson interval, performance, flagged thumbnails
- `annotate`    boxes and labels on frames, annotated video, a window where a GUI exists
- `scoring`     recall and double counts against synthetic ground truth

Nothing here imports torch: classifying works with numpy, OpenCV and an inference engine only.
Explanations (`sperm_edge.explain`) import torch when they run.
"""
