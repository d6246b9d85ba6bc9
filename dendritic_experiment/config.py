"""Every setting of the experiment, on one screen. Edit a value here, or pass the same name as a flag:
`batch_size = 512` below is `--batch-size 512`, and `--help` lists them all with their defaults. Booleans take
`--augment` / `--no-augment`; lists are comma-separated strings.
"""

# --- data ---
dataset = "cifar100"  # cifar100 or cifar10 (the standard python-pickle folders, downloaded when missing)
data_dir = "data"  # holds cifar-100-python/ (cifar-10-batches-py/); downloaded there when missing
val_split = 5000  # training images held out (fixed, seeded) for model selection and dendrite decisions
augment = True  # random crop with 4-pixel padding and horizontal flip, done in batches on the device
cutout = 8  # side in pixels of the square blanked in each training image (DeVries 2017: 8 on CIFAR-100); 0 = off

# --- runs ---
experiments = "resnet18,resnet34,resnet18_dendritic"  # comma list of runs: a model, <model>_dendritic, <model>_continued, <model>_w<multiple> (a baseline at another width: resnet18_w1.25)
results_dir = "results"  # one folder per run, plus summary.json, summary.md, comparison.png
run_name = ""  # when set, this invocation's runs and summary go to results_dir/run_name/ (e.g. a "baseline mode" study)
retrain = False  # train every run again even when a finished result with the same settings exists
smoke = False  # tiny data, 2 epochs, one dendrite cycle: the whole pipeline in minutes on a CPU
plot_only = False  # redraw summary.md and comparison.png from summary.json, train nothing
overfit_batch = False  # sanity check instead: fit one fixed batch with each model; the loss must fall to near zero
wandb_project = ""  # log each run's epochs and dendrite additions to this Weights & Biases project (needs wandb)
seeds = "0,1,2"  # comma list; every run is trained once per seed (the validation split stays fixed); one seed is preliminary
checkpoint_seconds = 60  # a run saves its resume checkpoint at most this often (ResNet-18's: 90 MB, ~0.3 s); 0: every epoch
control = True  # with warm_start, also train <model>_continued: the baseline trained as long again, no dendrites

# --- model ---
width = 1.0  # multiplies every channel count: 1 the standard networks; 0.125 ResNets of 8-64 channels, for a CPU

# --- optimisation (baselines; the first phase of a dendritic run from scratch) ---
epochs = 200  # training epochs of a baseline
batch_size = 512  # images per step; the learning rates below are scaled by batch_size / 128
lr = 0.1  # peak learning rate at batch 128 (SGD, the usual CIFAR ResNet value)
momentum = 0.9  # SGD momentum
nesterov = True  # Nesterov momentum
weight_decay = 5e-4  # L2 penalty on every weight, the usual CIFAR ResNet value
label_smoothing = 0.1  # share of the target spread over the other classes
warmup_epochs = 5  # linear warm-up before the cosine decay to zero (stepped per batch)

# --- hardware ---
device = "auto"  # auto picks cuda, then mps, then cpu; or name one: cuda, cuda:1, mps, cpu
precision = "auto"  # auto: bf16 on CUDA (fp16 with a gradient scaler where bf16 is missing), fp32 elsewhere
channels_last = True  # NHWC memory layout: faster convolutions on tensor cores
parallel_runs = 0  # runs that may train at once, each a Ray task in its own process (needs ray); 0: one after another, no Ray
ray_address = ""  # with parallel_runs: empty starts a Ray on this machine; auto or host:port joins a `ray start` cluster
gpus_per_run = 1.0  # with parallel_runs: the GPUs each run takes; 0.5 lets two runs share one GPU
compile = False  # torch.compile each run's model, anew for every run and restructure; off until measured to pay on a GPU

# --- dendrites (perforatedai) ---
# The library authors' ResNet recipe, as flags (docs/method.md, "The library authors' ResNet recipe"):
#   --dendrite-modules layer4.0,layer4.1 (their --convert-count 1) --dendrite-lr-multiplier 1
#   --dendrite-weight-decay 5e-4 --dendrite-init-scale 0.1 --dendrite-activation relu --dendrite-lr 1.0
#   --switch-mode history --history-epochs 40 --max-dendrites 5 --dendrite-min-gain 0
dendrite_modules = "auto"  # conv+bn pairs, linear layers (fc) or residual blocks (layer3.0) that get dendrites; auto: models.AUTO_DENDRITE_MODULES
max_dendrites = 3  # dendrites added at most; the tracker stops earlier when one does not improve validation
switch_mode = "fixed"  # fixed: a dendrite every dendrite_epochs; history: when validation stalls history_epochs
dendrite_epochs = 40  # epochs of each dendrite cycle in fixed mode (one per-epoch cosine cycle)
history_epochs = 10  # history mode: epochs without validation improvement before the next dendrite
dendrite_lr = 0.02  # peak learning rate of each dendrite cycle at batch 128: fine-tuning a trained model
# The next four: the only setting of the CPU study (docs/studies.md, "The first study, behind the defaults") under which
# dendrites carried a measurable share of their layers' output; the library's defaults left them idle.
dendrite_lr_multiplier = 30.0  # the dendrites' own parameters learn at this multiple of the cycle's rate (library: 1; 0: never)
dendrite_weight_decay = 0.0  # L2 penalty on the dendrites' own parameters (library: the global one, 5e-4 here)
dendrite_init_scale = 1.0  # a new dendrite's weights are drawn as this * N(0, 1) (library: 0.01)
dendrite_activation = "tanh"  # a dendrite's output function: sigmoid (library), tanh or relu; sigmoid near 0 is a bias
dendrite_min_gain = 0.5  # validation points a cycle must gain over the best so far to keep its dendrite (docs/method.md)
warm_start = True  # start the dendritic run from the finished baseline's weights instead of training that phase again
dendrite_warmup_epochs = 0  # a dendrite cycle's first epochs, in which only dendrites train (the control: frozen)
