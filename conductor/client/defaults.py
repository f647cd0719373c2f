"""客户端的默认值：包的 __init__ 与 SDK 都从这里取，SDK 不必反过来导入包本身。"""

DEFAULT_URL = "http://127.0.0.1:8000"  # 服务的默认监听地址（serve 的 host:port 默认值）
