import pytest

from fizzbuzz import fizzbuzz


@pytest.mark.parametrize("n", [3, 6, 9, 99])
def test_multiples_of_three(n):
    assert fizzbuzz(n) == "Fizz"


@pytest.mark.parametrize("n", [5, 10, 20, 100])
def test_multiples_of_five(n):
    assert fizzbuzz(n) == "Buzz"


@pytest.mark.parametrize("n", [15, 30, 45, 90])
def test_multiples_of_fifteen(n):
    assert fizzbuzz(n) == "FizzBuzz"


@pytest.mark.parametrize("n", [1, 2, 7, 98])
def test_other_numbers(n):
    assert fizzbuzz(n) == str(n)
