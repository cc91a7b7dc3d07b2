// cli/main.cc — placeholder entry (replaced below).
int main() { return 0; }
