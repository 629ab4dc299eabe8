base:
  '*':
    - tether
