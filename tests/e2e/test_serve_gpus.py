"""端到端：`conductor serve --num-gpus 2`（内嵌 PostgreSQL + 本地 Ray 的逻辑 GPU）与真实的 CLI。

没有真 GPU 的机器上也能用：Ray 的逻辑 GPU 照样分配编号，作业的 CUDA_VISIBLE_DEVICES 即是它。
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.serve import ServeProcess
from harness.waiting import wait_for


def test_embedded_service_gives_gpu_jobs_their_gpus(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "2", "--num-gpus", "2")
    try:
        serve.wait_healthy()
        work = tmp_path / "work"
        script = tmp_path / "train.sh"
        script.write_text(
            "#!/bin/bash\n#SBATCH --gpus=1\n#SBATCH -o %x_%j.out\n"
            'echo "gpus=$CUDA_VISIBLE_DEVICES job_gpus=$SLURM_JOB_GPUS"\n'
        )
        cpu_script = tmp_path / "cpu.sh"
        cpu_script.write_text('#!/bin/bash\necho "gpus=[$CUDA_VISIBLE_DEVICES]"\n')
        ids = {}
        for path in (script, cpu_script):
            out = serve.cli("submit", str(path), "-D", str(work), "--json")
            assert out.returncode == 0, out.stderr
            ids[path.name] = json.loads(out.stdout)["job_id"]
        for job_id in ids.values():
            wait_for(
                lambda j=job_id: serve.query(j)["state"] == "COMPLETED",
                60,
                what=lambda j=job_id: f"作业 {j} 完成：{serve.query(j)}",
            )
        gpu_out = (work / f"train.sh_{ids['train.sh']}.out").read_text().split()
        gpus = gpu_out[0].removeprefix("gpus=")
        assert gpus in {"0", "1"}, gpu_out
        assert gpu_out[1] == f"job_gpus={gpus}"
        assert (work / f"slurm-{ids['cpu.sh']}.out").read_text() == "gpus=[]\n"
        # 比本机的 2 块 GPU 还多：提交时拒绝，什么也不保存
        too_many = serve.cli("submit", str(script), "--gpus=4", "-D", str(work))
        assert too_many.returncode == 1, too_many.stderr
        assert "GPU" in too_many.stderr and "最大 2 个" in too_many.stderr, too_many.stderr
        assert serve.stop() == 0, serve.log_tail()
    finally:
        serve.cleanup()
