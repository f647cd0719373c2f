"""测试与基准共用的脚手架：把真实的 `conductor serve` 作为子进程运行（serve）、轮询等待（waiting）、
直接写入排队作业（rows）、私有的 PostgreSQL（postgres）。

为什么是仓库顶层的独立包：bench/ 要用这些东西，而基准不应导入 tests/（测试套件的内部）；
它们也不属于服务本身——pyproject 只打包 conductor、api、cluster，本包不随服务安装，
服务的代码也不导入它（tests/unit/test_layers.py 的依赖方向之外）。
"""
