from conftest import text_of


async def test_execute_returns_output_and_value(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "print('hi')\n6 * 7"})
    assert not result.is_error
    assert text_of(result) == "hi\n42\n"
