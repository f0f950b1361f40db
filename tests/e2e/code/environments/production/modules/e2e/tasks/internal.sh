#!/bin/sh
echo private-ok
