from fizzbuzz import fizzbuzz


def test_first_hundred():
    expected = []
    for n in range(1, 101):
        word = ("Fizz" if n % 3 == 0 else "") + ("Buzz" if n % 5 == 0 else "")
        expected.append(word or str(n))
    assert [fizzbuzz(n) for n in range(1, 101)] == expected


def test_large_number():
    assert fizzbuzz(3 * 5 * 7 * 11 * 13) == "FizzBuzz"
    assert fizzbuzz(1_000_001) == "1000001"
