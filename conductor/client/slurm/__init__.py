"""Slurm 的替身命令：sbatch、squeue、scancel、sacct、sinfo、scontrol（议题 18）。

语法与输出照 Slurm（解析它们输出的脚本不必改）；经 REST API 与服务交互。为了启动快，
只导入标准库与 conductor 的纯模块：不导入 Ray、httpx、FastAPI、SQLAlchemy
（tests/unit/test_slurm_commands_imports.py 检查）。
"""
