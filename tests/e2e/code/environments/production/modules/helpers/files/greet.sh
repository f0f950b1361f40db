greeting="hello from helpers"
