"""REST 路由，每种资源一个模块；路径、状态码与响应体与 CONTRACT.md 一致。

submit（提交）、jobs（查询、取消、列表）、dashboard（总览）、health（健康）、control（挂起、放行、修改）、
logs（日志流）、metrics（Prometheus）、login（网页的一次性登录码）。路由只做转换，
状态变化交给 conductor/store/transitions.py，错误到状态码的映射在 api/errors.py。
"""
