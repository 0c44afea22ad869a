#!/usr/bin/env bash
# The retraining on a rented GPU in one call, bringing back the resume state, the best weights and the log.
#
#   here, once:      bash scripts/train-on-gpu.sh prepare       # state + system photos into .gpu/ (git-ignored)
#   on the device:   bash scripts/train-on-gpu.sh run MINUTES   # carry .gpu; writes into $OUT
#   here, after:     bash scripts/train-on-gpu.sh collect DIR   # DIR: the returned files; the state goes back to the cache
#                    (stop the CPU run first, or it overwrites the returned state at its next save)
#
# The run goes on from the state this machine's CPU run left (same command, same recipe), on the GPU
# with noise synthesis in torch; without a state it starts from the committed in-training weights.
# The device has its own Python with PyTorch (python3; set PYTHON to use another); nothing is installed there.
set -euo pipefail
RUN=train-detail-wb-v2
TRAIN=(--out "runs/$RUN" --recipe detail-wb-v2 --steps 90000 --lr 1e-3 --warmup 1000 --precision bf16
       --validate-every 2000 --checkpoint-every 500)
CACHE="${LLPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llpack}/train/$RUN"
FILES=(train_state.pt best.pt best.json loss.csv)

case "${1:-}" in
prepare)
    mkdir -p ".gpu/cache/train/$RUN" .gpu/root/usr/share/backgrounds/mate
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    for f in "${FILES[@]}"; do [ -f "$CACHE/$f" ] && cp "$CACHE/$f" ".gpu/cache/train/$RUN/"; done
    cp -r /usr/share/backgrounds/mate/nature .gpu/root/usr/share/backgrounds/mate/
    du -sh .gpu
    ;;
run)
    minutes="${2:-8}"
    export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 LLPACK_CACHE="$PWD/.gpu/cache" LLPACK_SYSTEM_ROOT="$PWD/.gpu/root"
    out="${OUT:-runs/gpu-out}"
    mkdir -p "$out"
    "${PYTHON:-python3}" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    "${PYTHON:-python3}" -m toolkit.cli -v train "${TRAIN[@]}" --device "${DEVICE:-cuda}" --synthesis "${SYNTHESIS:-torch}" \
        --init toolkit/model/weights/in-training/detail-wb-v2-best.pt --max-minutes "$minutes" 2>&1 | tee "$out/train.log"
    for f in "${FILES[@]}"; do cp ".gpu/cache/train/$RUN/$f" "$out/"; done
    ;;
collect)
    mkdir -p "$CACHE"
    for f in "${FILES[@]}"; do cp "${2:?the folder of the returned files}/$f" "$CACHE/"; done
    echo "state back in $CACHE: the CPU run goes on from it with the same command"
    ;;
*)
    sed -n '2,11p' "$0"; exit 2
    ;;
esac
